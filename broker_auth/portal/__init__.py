"""The buyer's web portal: catalog, account, orders and payment, grants and a live chart."""

from broker_auth.portal.mount import PortalSettings, mount_portal

__all__ = ["PortalSettings", "mount_portal"]
