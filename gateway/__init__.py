"""gateway: the public entrypoint of a hosted-Datasette service.

from gateway import create_app, Config
app = create_app(Config(domain="example.org", data_dir="/var/lib/gateway"))
"""

from gateway.app import create_app
from gateway.config import Config

__all__ = ["Config", "create_app"]
