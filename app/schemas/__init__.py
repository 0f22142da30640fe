"""Request and response bodies of the HTTP API (pydantic), apart from the ORM tables.

One module per resource: :mod:`~app.schemas.ratings`, :mod:`~app.schemas.recommendations`,
:mod:`~app.schemas.items`, :mod:`~app.schemas.model_versions`,
:mod:`~app.schemas.training_runs` and :mod:`~app.schemas.health`; error bodies in
:mod:`~app.schemas.problems`, shared field types in :mod:`~app.schemas.fields`.

Every model carries an example for the OpenAPI documentation. Request models
forbid unknown fields, ids are checked against :data:`app.domain.ID_PATTERN`, and
ratings must be finite JSON numbers (strings, booleans, NaN and infinities are
refused); whether a rating is on the configured scale is checked by the service,
which knows the scale. Response models that mirror a stored record are built from
it with ``model_validate`` (``from_attributes``), not copied field by field.
"""
