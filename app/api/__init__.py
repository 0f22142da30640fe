"""The HTTP API: an app factory (:func:`app.api.main.create_app`) and one router per resource."""
