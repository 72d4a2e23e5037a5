"""The HTTP layer: Flask app factory, blueprints, problem details."""

from api.app import create_app

__all__ = ["create_app"]
