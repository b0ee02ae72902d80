"""The ``neutron`` provider: OpenStack Neutron ports through openstacksdk."""

from .client import NeutronClient, build_connection
from .provider import NeutronProvider
from .settings import NeutronSettings, Secret, settings_from_table
from .stats import CallStats, OpStats

__all__ = ["CallStats", "NeutronClient", "NeutronProvider", "NeutronSettings", "OpStats", "Secret",
           "build_connection", "settings_from_table"]
