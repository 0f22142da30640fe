"""The dashboard's templates (``templates/``) and static assets (``static/``), served by
:mod:`app.api.dashboard`."""
