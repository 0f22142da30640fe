"""rbmrec: the recommender service (FastAPI + SQLAlchemy) around :mod:`rbm_core`."""

__version__ = "0.1.0"
