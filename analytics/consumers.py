"""The admin's live feed: a websocket that forwards every request log row as it is written.

Staff only (``analytics.view_all_requests``), authenticated by the admin session cookie through
AuthMiddlewareStack; anyone else is refused during the handshake (HTTP 403).
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .live import LIVE_GROUP
from .selectors import user_sees_all_requests

log = logging.getLogger(__name__)


class LiveFeedConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(user_sees_all_requests)(user):
            await self.close()
            return
        try:
            await self.channel_layer.group_add(LIVE_GROUP, self.channel_name)
        except Exception:
            log.warning("live feed: channel layer unavailable", exc_info=True)
            await self.close()
            return
        self.joined = True
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "joined", False):
            try:
                await self.channel_layer.group_discard(LIVE_GROUP, self.channel_name)
            except Exception:
                log.warning("live feed: could not leave the group", exc_info=True)

    async def receive_json(self, content, **kwargs) -> None:
        # The feed only talks; anything the browser sends is ignored.
        return

    async def live_rows(self, event: dict) -> None:
        for row in event["rows"]:
            await self.send_json(row)
