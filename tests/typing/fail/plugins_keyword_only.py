import toolkit


async def endpoint(websocket: toolkit.WebSocket) -> None: ...


toolkit.WebSocketApp(endpoint, toolkit.PluginManager())  # E: call-arg  P: reportCallIssue
