"""A local stand-in for fal.ai's queue API, speaking HTTPS the way fal_client uses it.

Run ``python -m infra.falsim --help``, or in tests::

    from infra.falsim import SimConfig, SimulatorServer

    with SimulatorServer(tmp_path, config=SimConfig(inference_delay=0.2)) as sim:
        ...  # FAL_QUEUE_RUN_HOST=sim.netloc, SSL_CERT_FILE=sim.ca_bundle
"""

from .config import SimConfig, ValidationMode
from .faults import Faults, ImageFault, Outcome, SubmitErrors, WebhookMode, prompt_faults
from .server import SimulatorServer
from .signing import load_private_key, sign_webhook

__all__ = [
    "Faults",
    "ImageFault",
    "Outcome",
    "SimConfig",
    "SimulatorServer",
    "SubmitErrors",
    "ValidationMode",
    "WebhookMode",
    "load_private_key",
    "prompt_faults",
    "sign_webhook",
]
