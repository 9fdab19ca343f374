"""Devices (admin): register one, list them with their newest reading, rotate, delete."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Response

from broker_auth.api.auth import ADMIN, Rt
from broker_auth.api.errors import E401_ADMIN, E404, E409, E422, E503, EBODY
from broker_auth.infra.clock import as_utc
from broker_auth.schemas import DeviceCreate, DeviceCreated, DeviceOut, DevicePassword

router = APIRouter(tags=["admin"], dependencies=ADMIN)


def device_out(doc: Mapping[str, Any], last_reading_at: dt.datetime | None) -> DeviceOut:
    """The answer for one stored device document."""
    return DeviceOut(
        device_id=str(doc["_id"]),
        username=str(doc["username"]),
        enabled=bool(doc.get("enabled", True)),
        created_at=as_utc(doc["created_at"]),
        last_reading_at=last_reading_at,
    )


@router.post(
    "/api/devices",
    response_model=DeviceCreated,
    status_code=201,
    summary="Register a device (admin); its MQTT password is shown once",
    responses={**E401_ADMIN, **E409, **E422, **E503, **EBODY},
)
def create_device(body: DeviceCreate, rt: Rt) -> DeviceCreated:
    username, password = rt.devices.create(body.device_id)
    return DeviceCreated(device_id=body.device_id, username=username, password=password)


@router.get(
    "/api/devices",
    response_model=list[DeviceOut],
    summary="Devices with their newest reading time (admin)",
    responses=E401_ADMIN,
)
def list_devices(rt: Rt) -> list[DeviceOut]:
    last = rt.last_readings.by_device()
    return [device_out(d, last.get(str(d["_id"]))) for d in rt.devices.list()]


@router.post(
    "/api/devices/{device_id}/password",
    response_model=DevicePassword,
    status_code=201,
    summary="Rotate a device's MQTT password (admin); the device is cut until it uses it",
    responses={**E401_ADMIN, **E404, **E503},
)
def rotate_device_password(device_id: str, rt: Rt) -> DevicePassword:
    return DevicePassword(password=rt.devices.rotate_password(device_id))


@router.delete(
    "/api/devices/{device_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a device (admin): cut at once, no more logins; its readings stay",
    responses={**E401_ADMIN, **E404, **E503},
)
def delete_device(device_id: str, rt: Rt) -> Response:
    rt.devices.delete(device_id)
    return Response(status_code=204)
