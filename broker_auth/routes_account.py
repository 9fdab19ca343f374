"""The buyer's own account: sessions (log in, log out)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from broker_auth.auth import (
    E_LOGIN,
    check_password,
    require_buyer,
    runtime,
    session_token,
)
from broker_auth.models import ErrorOut, LoginIn, SessionOut
from broker_auth.service import Runtime

router = APIRouter(tags=["buyers"])
Rt = Annotated[Runtime, Depends(runtime)]
Buyer = Annotated[str, Depends(require_buyer)]


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
