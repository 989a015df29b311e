"""The Microsoft Graph emulator: an HTTPS token service and Graph v1.0 over a seeded tenant.

Used by the demo, the tests and the benchmarks; the README section "The Graph emulator" documents it.
"""

from entra_pipeline.emulator.app import RequestRecord
from entra_pipeline.emulator.faults import FaultRule, Faults
from entra_pipeline.emulator.file_tenant import FileTenant
from entra_pipeline.emulator.server import Emulator, EmulatorConfig, running_emulator
from entra_pipeline.emulator.synthetic import SyntheticTenant
from entra_pipeline.emulator.tenant import Tenant
from entra_pipeline.emulator.tokens import AppRegistration

__all__ = [
    "AppRegistration",
    "Emulator",
    "EmulatorConfig",
    "FaultRule",
    "Faults",
    "FileTenant",
    "RequestRecord",
    "SyntheticTenant",
    "Tenant",
    "running_emulator",
]
