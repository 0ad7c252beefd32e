"""The served OpenAPI document lists each protocol's inference route with its request schema."""

from __future__ import annotations

import re

import aiohttp
import pytest

from app.api.openapi import FEEDBACK_REQUEST, V2_DATATYPES
from app.config import Settings, UpstreamSettings
from app.monitoring.profile import Profile
from tests.support.sidecar import run_sidecar
from tests.support.stub_upstream import free_port

PATHS = {
    "v2": ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"],
    "v1": ["/v1/models/{name}:predict"],
    "mlflow": ["/invocations"],
}


async def served_document(protocol: str, profile: Profile) -> dict:
    nowhere = UpstreamSettings(url=f"http://127.0.0.1:{free_port()}")  # the schema needs none
    settings = Settings(protocol=protocol, upstream=nowhere)
    async with run_sidecar(settings, {"loan": profile}) as sidecar, aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/openapi.json") as response:
            assert response.status == 200
            doc: dict = await response.json()
    return doc


@pytest.mark.parametrize("protocol", list(PATHS))
async def test_inference_paths_carry_request_schemas(protocol: str, profile: Profile) -> None:
    doc = await served_document(protocol, profile)
    other = {p for proto, paths in PATHS.items() if proto != protocol for p in paths}
    assert not other & set(doc["paths"])
    for path in PATHS[protocol]:
        post = doc["paths"][path]["post"]
        content = post["requestBody"]["content"]
        schema = content["application/json"]["schema"]
        assert schema["properties"]
        assert post["requestBody"]["required"] is True
        assert {"200", "400", "413", "415", "422", "502", "504"} <= set(post["responses"])
        error = post["responses"]["502"]["content"]["application/json"]["schema"]
        # V2 and V1 clients read `error` as a string; MLflow's routes keep the sidecar's object
        if protocol == "mlflow":
            assert error["required"] == ["error"]
            assert error["properties"]["error"]["type"] == "object"
        else:
            assert error["required"] == ["error", "type", "details"]
            assert error["properties"]["error"]["type"] == "string"
        names = {p["name"] for p in post.get("parameters", []) if p["in"] == "path"}
        assert names == set(re.findall(r"\{(\w+)\}", path))
    if protocol == "v2":
        tensor = schema["properties"]["inputs"]["items"]
        assert tensor["properties"]["datatype"]["enum"] == V2_DATATYPES
    if protocol == "mlflow":
        assert "text/csv" in content


async def test_feedback_and_metrics_are_documented(profile: Profile) -> None:
    doc = await served_document("v2", profile)
    feedback = doc["paths"]["/feedback"]["post"]
    body = feedback["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == FEEDBACK_REQUEST["required"]
    assert set(body["properties"]["feedback"]["items"]["properties"]) >= {
        "request_id", "row", "label", "key",
    }  # fmt: skip
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [
        "text/plain; version=1.0.0; charset=utf-8"
    ]
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
