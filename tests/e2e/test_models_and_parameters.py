"""The model registry through the running stack: GET /v1/models, per-model parameters
(refused when a model does not take them, mapped onto fal's names when it does), sizes,
seed 001's spellings and generations split into several fal requests."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support import TERMINAL, Api, MakeUser, wait_sim_requests_for

pytestmark = pytest.mark.e2e

MODEL_IDS = {"flux-dev", "flux-schnell", "flux-lora", "flux-pro", "flux-kontext", "sdxl"}


@pytest.fixture(scope="module")
def refused_user(make_user: MakeUser) -> Api:
    """Makes only requests that must be refused: its history stays empty."""
    return make_user()


# -- GET /v1/models ------------------------------------------------------------------------


def test_models_lists_the_registry_with_parameters_ranges_and_defaults(api: Api) -> None:
    response = api.http.get("/v1/models", headers=api.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    models = {m["id"]: m for m in body["models"]}
    assert set(models) == MODEL_IDS
    assert body["defaultModel"] == "flux-dev"

    dev = models["flux-dev"]
    assert dev["falApp"] == "fal-ai/flux/dev"
    assert dev["maxImagesPerRequest"] == 4
    assert dev["sizeMode"] == "image_size"
    assert dev["needsLora"] is False and dev["needsInputImage"] is False
    assert dev["pricing"]["perMegapixelUsd"] == 0.025
    params = dev["parameters"]
    assert params["steps"] == {
        "type": "integer",
        "required": False,
        "minimum": 1,
        "maximum": 50,
        "default": 28,
    }
    assert params["guidanceScale"]["minimum"] == 1
    assert params["guidanceScale"]["maximum"] == 20
    assert params["guidanceScale"]["default"] == 3.5
    assert params["enableSafetyChecker"]["default"] is True
    assert "negativePrompt" not in params and "loras" not in params

    schnell = models["flux-schnell"]["parameters"]
    assert (schnell["steps"]["maximum"], schnell["steps"]["default"]) == (12, 4)
    assert "guidanceScale" not in schnell

    lora = models["flux-lora"]
    assert lora["falApp"] == "fal-ai/flux-lora"
    assert lora["needsLora"] is True
    assert lora["parameters"]["loras"]["required"] is True

    pro = models["flux-pro"]["parameters"]
    assert pro["safetyTolerance"]["choices"] == ["1", "2", "3", "4", "5", "6"]
    assert "steps" not in pro

    kontext = models["flux-kontext"]
    assert kontext["sizeMode"] == "aspect_ratio"
    assert kontext["needsInputImage"] is True
    assert kontext["parameters"]["imageUrl"]["required"] is True
    assert kontext["pricing"] == {"perMegapixelUsd": None, "perImageUsd": 0.04}

    sdxl = models["sdxl"]
    assert sdxl["falApp"] == "fal-ai/fast-sdxl"
    assert sdxl["maxImagesPerRequest"] == 8
    assert sdxl["parameters"]["negativePrompt"]["default"] == ""
    assert sdxl["parameters"]["loras"]["required"] is False
    assert sdxl["parameters"]["steps"]["maximum"] == 65
    assert sdxl["parameters"]["guidanceScale"]["default"] == 7.5

    common = body["common"]
    assert common["numImages"] == {"type": "integer", "minimum": 1, "maximum": 5, "default": 1}
    assert common["imageSizePresets"]["square_hd"] == {"width": 1024, "height": 1024}
    assert "16:9" in common["aspectRatios"]
    assert common["outputFormats"] == ["jpeg", "png"]


def test_models_needs_an_api_key(api: Api) -> None:
    response = api.http.get("/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"unauthenticated", "missing_credentials"}


# -- refused parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"model": "flux-schnell", "guidanceScale": 3}, "guidanceScale", "flux-schnell"),
        ({"model": "flux-pro", "steps": 20}, "steps", "flux-pro"),
        (
            {"model": "flux-kontext", "imageUrl": "https://x.test/a.png", "steps": 4},
            "steps",
            "flux-kontext",
        ),
        ({"negative_prompt": "blurry"}, "negativePrompt", "flux-dev"),
        ({"model": "flux-schnell", "cfg_scale": 7}, "cfgScale", "flux-schnell"),
        ({"sampler": "euler_a"}, "sampler", "flux-dev"),
        ({"model": "sdxl", "sampler": "dpmpp_2m"}, "sampler", "sdxl"),
        ({"steps": 51}, "steps", "flux-dev"),
        ({"model": "flux-schnell", "steps": 13}, "steps", "flux-schnell"),
        ({"numImages": 6}, "numImages", ""),
        ({"numImages": 0}, "numImages", ""),
        ({"model": "flux-kontext", "imageSize": "square"}, "imageSize", "flux-kontext"),
        ({"model": "flux-kontext"}, "imageUrl", "flux-kontext"),
        ({"model": "flux-kontext", "imageUrl": "ftp://x.test/a.png"}, "imageUrl", ""),
        ({"model": "flux-lora"}, "loras", "flux-lora"),
        ({"model": "flux-dev", "loras": [{"id": "x"}]}, "loras", "flux-dev"),
        ({"width": 512}, "height", ""),
        ({"width": 500, "height": 512}, "width", ""),
        ({"aspectRatio": "5:4"}, "aspectRatio", ""),
        ({"guidanceScale": 4, "cfg_scale": 4}, "cfgScale", ""),
        ({"model": "flux-turbo"}, "model", "flux-turbo"),
    ],
)
def test_parameters_a_model_does_not_take_are_422_naming_field_and_model(
    refused_user: Api, body: dict[str, Any], field: str, says: str
) -> None:
    response = refused_user.create({"prompt": "a cat", **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    named = {d["field"]: d for d in error["details"]}
    assert field in named, error
    assert field in error["message"]
    assert says in named[field]["message"]
    assert refused_user.history_total() == 0


def test_two_size_forms_at_once_are_422(refused_user: Api) -> None:
    response = refused_user.create({"prompt": "a", "imageSize": "square", "aspectRatio": "1:1"})
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert {d["type"] for d in details} == {"conflict"}
    assert {d["field"] for d in details} <= {"imageSize", "aspectRatio"}


# -- accepted parameters reach fal under fal's names ---------------------------------------


def _input_image_url(images_bucket, stack_env: dict[str, str]) -> str:
    """A PNG in the emulator's images bucket, at a URL anyone (the simulator) can GET."""
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 120, 40)).save(buffer, "PNG")
    name = f"test-inputs/{uuid.uuid4()}.png"
    images_bucket.blob(name).upload_from_string(buffer.getvalue(), content_type="image/png")
    return f"{stack_env['STORAGE_EMULATOR_HOST']}/{images_bucket.name}/{name}"


CASES = {
    "flux-dev": (
        {"model": "flux-dev", "steps": 10, "guidanceScale": 5, "seed": 11, "imageSize": "square"},
        "fal-ai/flux/dev",
        {"num_inference_steps": 10, "guidance_scale": 5, "seed": 11, "image_size": "square"},
        (512, 512),
    ),
    "flux-dev-defaults": (
        {},
        "fal-ai/flux/dev",
        {"num_inference_steps": 28, "guidance_scale": 3.5, "image_size": "landscape_4_3"},
        (1024, 768),
    ),
    "flux-schnell": (
        {"model": "flux-schnell", "steps": 2, "image_size": {"width": 512, "height": 768}},
        "fal-ai/flux/schnell",
        {"num_inference_steps": 2, "image_size": {"width": 512, "height": 768}},
        (512, 768),
    ),
    "flux-pro": (
        {"model": "flux-pro", "safetyTolerance": 5, "aspectRatio": "3:2"},
        "fal-ai/flux-pro/v1.1",
        {"safety_tolerance": "5", "image_size": {"width": 1248, "height": 832}},
        (1248, 832),
    ),
    "flux-dev-aspect-ratio": (
        {"aspectRatio": "16:9", "outputFormat": "png"},
        "fal-ai/flux/dev",
        {"image_size": {"width": 1360, "height": 768}, "output_format": "png"},
        (1360, 768),
    ),
    # Seed 001's spellings: snake_case negative_prompt, cfg_scale, top-level width/height.
    "sdxl-seed-001": (
        {
            "model": "sdxl",
            "negative_prompt": "blurry",
            "cfg_scale": 9,
            "width": 768,
            "height": 512,
            "output_format": "png",
        },
        "fal-ai/fast-sdxl",
        {
            "negative_prompt": "blurry",
            "guidance_scale": 9,
            "image_size": {"width": 768, "height": 512},
            "format": "png",
            "num_inference_steps": 25,
        },
        (768, 512),
    ),
    "flux-kontext": (
        {"model": "flux-kontext", "imageUrl": "<input>", "aspectRatio": "16:9"},
        "fal-ai/flux-pro/kontext",
        {"aspect_ratio": "16:9", "image_url": "<input>", "guidance_scale": 3.5},
        (1360, 768),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_model_completes_with_its_parameters_under_fals_names(
    user: Api, fal_sim: httpx.Client, images_bucket, stack_env: dict[str, str], case: str
) -> None:
    body, app, expected, size = CASES[case]
    if body.get("imageUrl") == "<input>":
        image_url = _input_image_url(images_bucket, stack_env)
        body = {**body, "imageUrl": image_url}
        expected = {**expected, "image_url": image_url}
    generation_id = user.generate({"prompt": f"a test of {case}", **body})
    record = user.wait(generation_id, TERMINAL)
    assert record["status"] == "completed", record
    assert (record["width"], record["height"]) == size
    assert [(i["width"], i["height"]) for i in record["images"]] == [size]

    [request] = wait_sim_requests_for(fal_sim, generation_id)
    assert request["app"] == app
    arguments = request["arguments"]
    for name, value in expected.items():
        assert arguments.get(name) == value, (name, arguments)
    assert arguments["prompt"] == f"a test of {case}"
    # Nothing the app does not know is sent (the simulator's input holds the app's fields).
    assert set(arguments) <= set(request["input"]), set(arguments) - set(request["input"])
    assert request["input_errors"] == []
    if "image_url" in expected:
        assert [(f["kind"], f["status"]) for f in request["input_fetches"]] == [("image", 200)]


def test_recorded_parameters_show_defaults_and_the_seed(user: Api) -> None:
    generation_id = user.generate({"prompt": "defaults", "seed": 99, "model": "flux-schnell"})
    record = user.get(generation_id).json()
    assert record["model"] == "flux-schnell"
    params = record["parameters"]
    assert params["steps"] == 4
    assert params["numImages"] == 1
    assert params["outputFormat"] == "jpeg"
    assert params["imageSize"] == "landscape_4_3"
    assert params["seed"] == 99
    assert "guidanceScale" not in params
    assert user.wait(generation_id, TERMINAL)["seed"] == 99


# -- more images than fal returns per request -------------------------------------------------


def test_five_images_are_two_fal_requests_with_consecutive_seeds(
    user: Api, fal_sim: httpx.Client, images_bucket
) -> None:
    generation_id = user.generate(
        {"prompt": "five foxes", "numImages": 5, "seed": 1234, "imageSize": "square"}
    )
    record = user.wait(generation_id, TERMINAL)
    assert record["status"] == "completed", record
    assert record["numImages"] == 5
    assert record["seed"] == 1234

    requests = wait_sim_requests_for(fal_sim, generation_id, count=2)
    assert len(requests) == 2, requests
    assert [r["app"] for r in requests] == ["fal-ai/flux/dev"] * 2
    assert [r["webhook_url"].split("part=")[1][0] for r in requests] == ["0", "1"]
    assert [r["arguments"]["num_images"] for r in requests] == [4, 1]
    assert [r["arguments"]["seed"] for r in requests] == [1234, 1235]
    assert all(r["status"] == "COMPLETED" for r in requests)

    assert [(p["index"], p["numImages"], p["status"]) for p in record["parts"]] == [
        (0, 4, "completed"),
        (1, 1, "completed"),
    ]
    images = record["images"]
    prefix = f"generations/{user.user_id}/{generation_id}/"
    assert [i["path"] for i in images] == [f"{prefix}{n}.jpg" for n in range(5)]
    assert [i["seed"] for i in images] == [1234] * 4 + [1235]
    for image in images:
        blob = images_bucket.get_blob(image["path"])
        assert blob is not None and blob.size == image["fileSize"]
        assert (image["width"], image["height"]) == (512, 512)
    # The fifth image is the second request's first (and only) one.
    last = httpx.get(images[4]["url"])
    assert last.status_code == 200
    assert last.content == images_bucket.blob(images[4]["path"]).download_as_bytes()
