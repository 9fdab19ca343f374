"""The buyer's own account: sessions (log in, log out), the MQTT password, the login password."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from broker_auth.api.auth import (
    E_LOGIN,
    check_password,
    require_buyer,
    runtime,
    session_token,
)
from broker_auth.api.schemas import ErrorOut, LoginIn, MqttPasswordOut, PasswordChange, SessionOut
from broker_auth.service import Runtime

router = APIRouter(tags=["buyers"])
Rt = Annotated[Runtime, Depends(runtime)]
Buyer = Annotated[str, Depends(require_buyer)]
E_LOGIN_LIMIT: dict[int | str, dict[str, Any]] = {429: E_LOGIN[429]}


@router.post(
    "/api/sessions",
    response_model=SessionOut,
    status_code=201,
    summary="Log in: a session token for the other buyer calls (the portal keeps no password)",
    responses=E_LOGIN,
)
async def create_session(body: LoginIn, request: Request, rt: Rt) -> SessionOut:
    if not await check_password(request, body.username, body.password):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid username or password")
    session = await anyio.to_thread.run_sync(rt.sessions.create, body.username)
    return SessionOut(token=session.token, expires_at=session.expires_at)


@router.delete(
    "/api/sessions/current",
    status_code=204,
    response_class=Response,
    summary="Log out: the session token of this call stops working",
    responses={401: {"model": ErrorOut, "description": "not logged in with a session"}},
)
async def delete_session(request: Request, _username: Buyer, rt: Rt) -> Response:
    token = session_token(request)
    if token is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log out needs a session token")
    await anyio.to_thread.run_sync(rt.sessions.revoke, token)
    return Response(status_code=204)


@router.post(
    "/api/account/mqtt-password",
    response_model=MqttPasswordOut,
    status_code=201,
    summary="A new MQTT password (shown once); the old one stops, connected clients are cut",
    responses={401: {"model": ErrorOut, "description": "not logged in"}, **E_LOGIN_LIMIT},
)
async def rotate_mqtt_password(username: Buyer, rt: Rt) -> MqttPasswordOut:
    password = await anyio.to_thread.run_sync(rt.accounts.rotate_mqtt_password, username)
    return MqttPasswordOut(mqtt_password=password)


@router.post(
    "/api/account/password",
    status_code=204,
    response_class=Response,
    summary="Change the login password (every session ends; MQTT is not affected)",
    responses=E_LOGIN,
)
async def change_password(
    body: PasswordChange, request: Request, username: Buyer, rt: Rt
) -> Response:
    if not await check_password(request, username, body.old_password):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the old password is wrong")
    await anyio.to_thread.run_sync(rt.accounts.change_password, username, body.new_password)
    await anyio.to_thread.run_sync(rt.sessions.revoke_all, username)
    return Response(status_code=204)
