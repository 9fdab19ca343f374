"""A buyer's account: sign-up, sessions (log in, log out), the login and the MQTT password."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from broker_auth.api.auth import Buyer, Rt, check_password, check_signup_rate, session_token
from broker_auth.api.errors import E401, E422, E503, E_LOGIN, EBODY, error
from broker_auth.schemas import (
    AccountCreate,
    AccountOut,
    LoginIn,
    MqttPasswordOut,
    PasswordChange,
    SessionOut,
)

router = APIRouter(tags=["buyers"])


@router.post(
    "/api/accounts",
    response_model=AccountOut,
    status_code=201,
    summary="Register a buyer; the answer holds the MQTT password (shown once)",
    responses={
        **error(409, "username taken"),
        **E422,
        **error(429, "too many sign-ups"),
        **E503,
        **EBODY,
    },
    dependencies=[Depends(check_signup_rate)],
)
def create_account(body: AccountCreate, rt: Rt) -> AccountOut:
    mqtt_password = rt.accounts.create(body.username, body.password)
    return AccountOut(username=body.username, mqtt_password=mqtt_password)


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
    responses=error(401, "not logged in with a session"),
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
    responses={**E401, 429: E_LOGIN[429]},
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
