"""One router per resource; `all.ROUTERS` is the list the app includes, in order."""
