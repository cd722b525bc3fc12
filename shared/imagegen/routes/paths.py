"""The resources' paths, importable without the resources: the router maps them before any
resource module is loaded, and the modules build their links and descriptions from them."""

GENERATIONS_PATH = "/v1/images/generations"
BATCH_PATH = "/v1/images/batch"
LORAS_PATH = "/v1/loras"
API_KEYS_PATH = "/v1/admin/apiKeys"
