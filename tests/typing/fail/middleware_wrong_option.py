import toolkit


async def app(scope: toolkit.Scope, receive: toolkit.Receive, send: toolkit.Send) -> None: ...


toolkit.compose(app, toolkit.Middleware(toolkit.ToolkitMiddleware, plugins="logging"))  # E: arg-type  P: reportArgumentType
toolkit.Middleware(toolkit.ToolkitMiddleware, toolkit.PluginManager())  # E: call-arg  P: reportCallIssue
