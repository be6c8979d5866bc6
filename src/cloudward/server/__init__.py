"""cloudward's API server: a FastAPI app over the findings store, run by `cloudward server`.

    from cloudward.server.app import create_app
    from cloudward.server.config import ServerConfig
    app = create_app(ServerConfig.from_settings(settings))

Layout: `app.py` builds the app (routers, auth check on every route, lifespan that starts the job
runner and the scheduler); `routers/` holds one module per resource; `auth.py` turns a bearer
token or a session cookie into a `Principal` and enforces roles and CSRF; `accounts.py` is the
user/token/session logic shared with the CLI; `jobs/` runs allow-listed cloudward commands behind
the `JobRunner` interface; `schedules.py`, `webhooks.py` and `metrics.py` do what they say.

A dashboard slots in as another router: `create_app(config, extra_routers=[router])`, its routes
guarded by `auth.allow(Role.READ_ONLY)` like every API route (the app refuses to start with a
route that declares no access rule), its login form posting to `/api/v1/auth/login`.
"""
