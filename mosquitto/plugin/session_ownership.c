/*
 * Session ownership for Mosquitto 2.0 (plugin API v5), loaded before the dynamic-security plugin.
 *
 * Mosquitto ties a session to its client id alone: whoever connects with a known id takes the
 * session over (the connected owner is disconnected; with clean start its subscriptions and
 * queued messages are discarded). This plugin makes a client id belong to an account:
 *
 * - an id containing ':' is reserved: only the username before the first ':' may use it;
 * - a client that connects with a username must use an id reserved for it, `<username>:<any>`;
 * - an anonymous client must use an id without ':'.
 *
 * Usernames never contain ':' (buyers, `svc.*` services, `device.*` devices), so the rule needs
 * no state and holds across restarts. The check is made in MOSQ_EVT_BASIC_AUTH, which
 * Mosquitto 2.0 runs for every CONNECT, with or without a username (handle_connect.c:
 * handle__connect -> security.c: mosquitto_unpwd_check), and before the takeover itself
 * (connect__on_authorised). A refusal is MOSQ_ERR_AUTH: CONNACK "not authorised", and the
 * existing session, connected or not, is left as it was. A client that passes gets
 * MOSQ_ERR_PLUGIN_DEFER, so the dynamic-security plugin (next in line: the first answer that
 * is not DEFER wins) still checks the password.
 *
 * Anonymous sessions are bounded by MOSQ_EVT_ACL_CHECK: an anonymous SUBSCRIBE asking for a
 * QoS above `plugin_opt_anonymous_max_qos` (default 0) is refused. Mosquitto queues no QoS 0
 * message for a disconnected client (database.c: db__message_insert, queue_qos0_messages off),
 * so an abandoned anonymous session keeps what it had when it left and grows no further;
 * `persistent_client_expiration` in mosquitto.conf ends it.
 */

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* Of a refused client id only the owner part is logged, at most this long (usernames: 64). */
#define OWNER_SHOWN_MAX 64

static mosquitto_plugin_id_t *plugin_id;
static int anonymous_max_qos;

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

static void log_refusal(const struct mosquitto *client, const char *username, const char *id)
{
	const char *colon = strchr(id, ':');
	const char *address = mosquitto_client_address(client);
	int owner_len = colon ? (int)(colon - id) : 0;

	if (owner_len > OWNER_SHOWN_MAX) {
		owner_len = OWNER_SHOWN_MAX;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"session-ownership: refused %s%.64s%s from %s: its client id %s%.*s%s",
			username ? "user '" : "an anonymous client", username ? username : "",
			username ? "'" : "", address ? address : "?",
			colon ? "is reserved for '" : "is not in its namespace ('<username>:...')",
			owner_len, id, colon ? "'" : "");
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);
	const char *colon;
	size_t n;

	(void)event;
	(void)userdata;
	if (id == NULL) {
		return MOSQ_ERR_AUTH;
	}
	colon = strchr(id, ':');
	if (ed->username == NULL) {
		if (colon == NULL) {
			return MOSQ_ERR_PLUGIN_DEFER;
		}
	} else {
		n = strlen(ed->username);
		if (n > 0 && colon == id + n && strncmp(id, ed->username, n) == 0) {
			return MOSQ_ERR_PLUGIN_DEFER;
		}
	}
	log_refusal(ed->client, ed->username, id);
	return MOSQ_ERR_AUTH;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;

	(void)event;
	(void)userdata;
	if (ed->access == MOSQ_ACL_SUBSCRIBE && ed->qos > anonymous_max_qos
			&& mosquitto_client_username(ed->client) == NULL) {
		return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int rc;

	(void)userdata;
	anonymous_max_qos = 0;
	for (int i = 0; i < option_count; i++) {
		if (strcmp(options[i].key, "anonymous_max_qos") == 0) {
			char *end;
			long value = strtol(options[i].value, &end, 10);
			if (*options[i].value == '\0' || *end != '\0' || value < 0 || value > 2) {
				mosquitto_log_printf(MOSQ_LOG_ERR,
						"session-ownership: anonymous_max_qos must be 0, 1 or 2");
				return MOSQ_ERR_INVAL;
			}
			anonymous_max_qos = (int)value;
		}
	}
	plugin_id = identifier;
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO,
			"session-ownership: client ids '<username>:...' reserved; anonymous: ids without "
			"':', subscriptions up to QoS %d", anonymous_max_qos);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	return MOSQ_ERR_SUCCESS;
}
