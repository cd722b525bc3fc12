"""terraform/ agrees with the code, and each rule that says so is shown to catch a breach.

Every rule in infrastructure_rules.py runs twice: on the real Terraform and code, where it
must find nothing, and on a copy with one thing broken, where it must report that thing.
Nothing here needs a cloud, a provider download or an emulator (see the module docstring of
infrastructure_rules.py for how each side is read).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit import infrastructure_rules as rules

Mutation = Callable[[rules.Infra], None]


@pytest.fixture(scope="module")
def infra() -> rules.Infra:
    return rules.Infra.load()


@pytest.fixture(scope="module")
def reads() -> dict[str, frozenset[str]]:
    return rules.settings_reads()


def broken(infra: rules.Infra, mutate: Mutation) -> rules.Infra:
    copy = infra.copy()
    mutate(copy)
    return copy


def reported(problems: list[str], expected: str) -> bool:
    return any(re.search(expected, p) for p in problems)


# -- the code analysis itself ---------------------------------------------------------------


def test_the_call_graph_finds_what_each_function_reads(reads: dict[str, frozenset[str]]) -> None:
    # Facts a reader can check in the code: who calls fal, who signs, who builds webhook URLs.
    assert set(reads) == {p.parent.name for p in rules.FUNCTIONS.glob("*/main.py")}
    assert {"webhook_url", "webhook_hmac_key", "fal_key", "tasks_queue"} <= reads["dispatcher"]
    assert {"webhook_hmac_key", "webhook_ingest_budget_seconds"} <= reads["webhook"]
    assert "fal_key" not in reads["webhook"]  # the webhook never calls fal
    assert "webhook_hmac_key" not in reads["api"]  # only the dispatcher builds webhook URLs
    assert {"cleanup_url", "cleanup_invoker", "retention_days"} <= reads["cleanup"]
    assert {"watchdog_url", "watchdog_invoker", "fal_key"} <= reads["watchdog"]
    assert all({"gcp_project", "log_level"} <= r for r in reads.values())


def test_every_query_site_of_the_code_is_exercised() -> None:
    assert rules.check_query_sites(rules.query_sites()) == []
    problems = rules.check_query_sites(rules.query_sites() | {"usage:Report.by_model"})
    assert reported(problems, r"usage:Report.by_model builds a Firestore query")


# -- functions: inventory, entry points, signature types -------------------------------------


def test_every_function_is_deployed_with_its_entry_point_and_signature(
    infra: rules.Infra,
) -> None:
    assert rules.check_function_inventory(infra, rules.entry_points()) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda i: i.functions["api"].update(entry_point="main"), r"api: entry_point 'main'"),
        (
            lambda i: i.functions["dispatcher"].update(event_trigger=None),
            r"dispatcher: main.py is a CloudEvent function but has no event_trigger",
        ),
        (
            lambda i: i.functions["watchdog"].update(
                event_trigger=i.functions["dispatcher"]["event_trigger"]
            ),
            r"watchdog: main.py is an HTTP function but has an event_trigger",
        ),
        (lambda i: i.functions.pop("cleanup"), r"functions/cleanup has no module block"),
        (
            lambda i: i.functions["webhook"].update(source_archive="${var.dist_dir}/api.zip"),
            r"webhook: source_archive",
        ),
    ],
)
def test_the_inventory_rule_catches(infra: rules.Infra, mutate: Mutation, expected: str) -> None:
    problems = rules.check_function_inventory(broken(infra, mutate), rules.entry_points())
    assert reported(problems, expected), problems


def test_a_function_folder_without_terraform_is_caught(infra: rules.Infra) -> None:
    entries = dict(rules.entry_points())
    entries["thumbnailer"] = rules.EntryPoint("thumbnailer", "thumbnailer", "http")
    problems = rules.check_function_inventory(infra, entries)
    assert reported(problems, r"functions/thumbnailer has no module block")


# -- environment variables ------------------------------------------------------------------


def test_each_function_gets_the_settings_its_code_reads_and_no_others(
    infra: rules.Infra, reads: dict[str, frozenset[str]]
) -> None:
    assert rules.check_environment(infra, reads) == []


def _env(function: str) -> Callable[[rules.Infra], dict[str, Any]]:
    return lambda i: i.functions[function]["environment"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda i: _env("dispatcher")(i).pop("WEBHOOK_URL"),
            r"dispatcher reads WEBHOOK_URL but terraform does not set it",
        ),
        (
            lambda i: i.functions["watchdog"]["secrets"].pop("FAL_KEY"),
            r"watchdog reads FAL_KEY but terraform does not set it",
        ),
        (
            lambda i: _env("api")(i).update(CLEANUP_URL="${local.function_url.cleanup}"),
            r"api sets CLEANUP_URL, which its code never reads",
        ),
        (
            lambda i: _env("webhook")(i).update(FAL_QUEUE_RUN_HOST="127.0.0.1:9"),
            r"webhook sets FAL_QUEUE_RUN_HOST, which is not a setting",
        ),
        (
            lambda i: _env("webhook")(i).update(STORAGE_EMULATOR_HOST="127.0.0.1:9"),
            r"webhook sets STORAGE_EMULATOR_HOST: .* local only",
        ),
        (
            lambda i: _env("dispatcher")(i).update(
                FAL_KEY=i.functions["dispatcher"]["secrets"].pop("FAL_KEY")
            ),
            r"dispatcher gets the secret FAL_KEY as a plain environment variable",
        ),
        (
            lambda i: i.functions["api"]["secrets"].update(GCP_PROJECT="${local.fal_key}"),
            r"api gets GCP_PROJECT from Secret Manager but it is no secret",
        ),
    ],
)
def test_the_environment_rule_catches(
    infra: rules.Infra, reads: dict[str, frozenset[str]], mutate: Mutation, expected: str
) -> None:
    problems = rules.check_environment(broken(infra, mutate), reads)
    assert reported(problems, expected), problems


def test_code_that_starts_reading_a_required_setting_is_caught(
    infra: rules.Infra, reads: dict[str, frozenset[str]]
) -> None:
    # As if the deadletter function started building webhook URLs.
    changed = {**reads, "deadletter": reads["deadletter"] | {"webhook_url"}}
    problems = rules.check_environment(infra, changed)
    assert reported(problems, r"deadletter reads WEBHOOK_URL but terraform does not set it")


def test_a_new_setting_must_be_classified(
    infra: rules.Infra, reads: dict[str, frozenset[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rules, "TUNABLE", rules.TUNABLE - {"max_megapixels"})
    problems = rules.check_environment(infra, reads)
    assert reported(problems, r"setting max_megapixels is not classified")


# -- sizing ---------------------------------------------------------------------------------


def test_the_build_environment_is_the_one_the_bundles_are_measured_with(
    infra: rules.Infra,
) -> None:
    assert rules.check_build_environment(infra) == []


def test_the_build_environment_rule_catches_a_missing_source_date_epoch(
    infra: rules.Infra,
) -> None:
    def drop(i: rules.Infra) -> None:
        i.function_module["google_cloudfunctions2_function"]["this"]["build_config"][0].pop(
            "environment_variables"
        )

    problems = rules.check_build_environment(broken(infra, drop))
    assert reported(problems, r"builds with environment_variables \{\}"), problems


def test_every_function_trusts_the_images_ca_directory(infra: rules.Infra) -> None:
    assert rules.check_trust(infra) == []


def test_the_trust_rule_catches_a_function_left_on_the_bundle(infra: rules.Infra) -> None:
    def drop(i: rules.Infra) -> None:
        i.functions["webhook"]["environment"].pop("SSL_CERT_DIR")

    problems = rules.check_trust(broken(infra, drop))
    assert problems == ["webhook: SSL_CERT_DIR is None, not '/etc/ssl/certs'"], problems


def test_threads_cpu_and_timeouts_fit_the_code(infra: rules.Infra) -> None:
    assert rules.check_sizing(infra) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda i: i.functions["api"].update(concurrency=32),
            r"api: THREADS is 16, concurrency 32",
        ),
        (
            lambda i: i.functions["dispatcher"].update(cpu=None),
            r"dispatcher: concurrency 8 needs at least 1 vCPU",
        ),
        (
            lambda i: i.functions["api"].update(timeout_seconds=30),
            r"api: timeout 30 s is not above the longest `Prefer: wait`",
        ),
        (
            lambda i: i.functions["cleanup"].update(timeout_seconds=200),
            r"cleanup: timeout 200 s is not above CLEANUP_TIME_BUDGET_SECONDS",
        ),
        (
            lambda i: i.resources["google_cloud_scheduler_job"]["cleanup"].update(
                attempt_deadline=["300s"]
            ),
            r"attempt_deadline \(300 s\) ends before",
        ),
    ],
)
def test_the_sizing_rule_catches(infra: rules.Infra, mutate: Mutation, expected: str) -> None:
    problems = rules.check_sizing(broken(infra, mutate))
    assert reported(problems, expected), problems


# -- names: topics, triggers, queue, buckets, URLs, invokers ---------------------------------


def test_names_agree_with_the_code_and_the_local_stack(infra: rules.Infra) -> None:
    assert rules.check_names(infra) == []


def _resource(rtype: str, name: str) -> Callable[[rules.Infra], dict[str, Any]]:
    return lambda i: i.resources[rtype][name]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda i: _resource("google_pubsub_topic", "generation_requests")(i).update(
                name=["generations"]
            ),
            r"topic 'generations', GENERATIONS_TOPIC default 'generation-requests'",
        ),
        (
            lambda i: _resource("google_pubsub_topic", "dead_letter")(i).update(name=["dlq"]),
            r"dead-letter topic 'dlq'",
        ),
        (
            lambda i: i.functions["deadletter"]["event_trigger"].update(
                topic="${google_pubsub_topic.generation_requests.id}"
            ),
            r"Eventarc triggers \(topic, function\)",
        ),
        (lambda i: i.locals.update(max_delivery_attempts=7), r"max delivery attempts 7"),
        (
            lambda i: _resource("google_cloud_tasks_queue", "watchdog")(i).update(name=["checks"]),
            r"queue 'checks' is not the TASKS_QUEUE default's",
        ),
        (
            lambda i: _env("webhook")(i).update(IMAGES_BUCKET="${module.lora_bucket.name}"),
            r"webhook: IMAGES_BUCKET = '\$\{module.lora_bucket.name\}'",
        ),
        (
            lambda i: i.modules["images_bucket"].update(delete_prefixes=["generations/"]),
            r"lifecycle prefixes \['generations/'\] are not the code's",
        ),
        (
            lambda i: i.modules["images_bucket"].update(delete_after_days=30),
            r"lifecycle age is not derived from var.retention_days",
        ),
        (
            lambda i: _env("dispatcher")(i).update(WATCHDOG_URL="${local.function_url.api}"),
            r"dispatcher: WATCHDOG_URL",
        ),
        (
            lambda i: i.locals.update(
                function_url=i.locals["function_url"].replace(
                    "local.project_number", "var.project_id"
                )
            ),
            r"local.function_url is not every function's Cloud Run URL",
        ),
        (
            lambda i: i.functions["watchdog"].update(
                invokers={"scheduler": i.functions["cleanup"]["invokers"]["scheduler"]}
            ),
            r"the watchdog's invokers .* are not the tasks account",
        ),
        (
            lambda i: _resource("google_cloud_scheduler_job", "cleanup")(i)["http_target"][0][
                "oidc_token"
            ][0].update(audience=["${local.function_url.api}"]),
            r"the scheduler job does not call CLEANUP_URL as CLEANUP_INVOKER",
        ),
    ],
)
def test_the_names_rule_catches(infra: rules.Infra, mutate: Mutation, expected: str) -> None:
    problems = rules.check_names(broken(infra, mutate))
    assert reported(problems, expected), problems


# -- Firestore indexes and TTL --------------------------------------------------------------


def test_every_query_has_its_index_and_every_index_a_query(infra: rules.Infra) -> None:
    assert rules.check_indexes(infra, rules.recorded_queries()) == []


def _indexes(i: rules.Infra) -> dict[str, Any]:
    return i.modules["firestore"]["composite_indexes"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda i: _indexes(i).pop("history_status"),
            r"no composite index \(status, user_id, created_at DESCENDING\)",
        ),
        (
            lambda i: _indexes(i).pop("history_count_model"),
            r"no composite index \(model, user_id, created_at ASCENDING\)",
        ),
        (
            lambda i: _indexes(i)["stuck"]["fields"][1].update(order="DESCENDING"),
            r"no composite index \(status, updated_at ASCENDING\)",
        ),
        (
            lambda i: _indexes(i).update(
                by_model={
                    "collection": "generations",
                    "fields": [
                        {"field_path": "model", "order": "ASCENDING"},
                        {"field_path": "created_at", "order": "DESCENDING"},
                    ],
                }
            ),
            r"composite index by_model .* serves no query",
        ),
        (
            lambda i: i.modules["firestore"]["ttl_fields"].pop("tombstones"),
            r"no TTL policy on deletedGenerations.expire_at",
        ),
    ],
)
def test_the_index_rule_catches(infra: rules.Infra, mutate: Mutation, expected: str) -> None:
    problems = rules.check_indexes(broken(infra, mutate), rules.recorded_queries())
    assert reported(problems, expected), problems


def test_a_new_query_without_its_index_is_caught(infra: rules.Infra) -> None:
    # As if the LoRA list were filtered by owner and ordered newest first.
    query = rules.Query(
        "loras", "loras", frozenset({"owner"}), frozenset(), (("created_at", "DESCENDING"),)
    )
    problems = rules.check_indexes(infra, [*rules.recorded_queries(), query])
    assert reported(problems, r"no composite index \(owner, created_at DESCENDING\)")


# -- access: ingress, invokers, grants ------------------------------------------------------


def test_access_follows_from_what_each_function_does(
    infra: rules.Infra, reads: dict[str, frozenset[str]]
) -> None:
    assert rules.check_access(infra, reads) == []


def _locals(name: str) -> Callable[[rules.Infra], Any]:
    return lambda i: i.locals[name]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda i: i.functions["dispatcher"].update(public=True), r"dispatcher is public"),
        (
            lambda i: i.functions["watchdog"].update(invokers={}),
            r"watchdog is a private HTTP function nobody may invoke",
        ),
        (
            lambda i: i.functions["cleanup"]["invokers"].update(anyone="allUsers"),
            r"cleanup lists a public principal",
        ),
        (
            lambda i: i.function_module["google_cloudfunctions2_function"]["this"][
                "service_config"
            ][0].update(ingress_settings=["ALLOW_ALL"]),
            r"ingress is 'ALLOW_ALL', not derived from public",
        ),
        (
            lambda i: _locals("secret_grants")(i).pop("fal_key/watchdog"),
            r"watchdog reads the secret fal_key but may not access it",
        ),
        (
            lambda i: _locals("secret_grants")(i).update(
                {
                    "webhook_hmac_key/api": {
                        "secret": "webhook_hmac_key",
                        "member": "${local.fn.api}",
                    }
                }
            ),
            r"api may access the secret webhook_hmac_key but is not given it",
        ),
        (
            lambda i: _locals("url_signers")(i).remove("dispatcher"),
            r"dispatcher signs URLs .* but may not signBlob",
        ),
        (
            lambda i: _locals("url_signers")(i).append("webhook"),
            r"webhook may signBlob as itself but never signs a URL",
        ),
        (
            lambda i: _locals("task_creators")(i).pop("webhook"),
            r"webhook: creates watchdog tasks: True, may enqueue: False",
        ),
        (
            lambda i: _locals("topic_grants")(i).pop("generation-requests/cleanup"),
            r"cleanup: publishes generations: True, may publish: False",
        ),
        (
            lambda i: _locals("function_project_roles")(i).append("roles/storage.admin"),
            r"functions hold the project-level role roles/storage.admin",
        ),
        (
            lambda i: _locals("build_project_roles")(i).append("roles/editor"),
            r"the build account holds the broad project-level role roles/editor",
        ),
        (
            lambda i: _locals("bucket_grants")(i)["images/api"].update(
                role="roles/storage.objectAdmin"
            ),
            r"bucket grant images/api is roles/storage.objectAdmin",
        ),
    ],
)
def test_the_access_rule_catches(
    infra: rules.Infra, reads: dict[str, frozenset[str]], mutate: Mutation, expected: str
) -> None:
    problems = rules.check_access(broken(infra, mutate), reads)
    assert reported(problems, expected), problems


# -- the dead-letter script -----------------------------------------------------------------


def test_the_dead_letter_script_gets_every_variable_it_needs(infra: rules.Infra) -> None:
    script = rules.FUNCTION_MODULE / "attach-dead-letter.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    needed = set(re.findall(r"\$\{(\w+):\?\}", script.read_text()))
    data = rules._plain(infra.function_module["terraform_data"]["dead_letter"])
    provisioner = data["provisioner"]["local-exec"]
    given = set(provisioner["environment"])
    assert needed == given, f"script needs {sorted(needed)}, terraform passes {sorted(given)}"


# -- cloudbuild.yaml ------------------------------------------------------------------------


def test_cloudbuild_runs_only_what_exists() -> None:
    assert rules.check_cloudbuild(rules.ROOT / "cloudbuild.yaml", rules.ROOT / "Makefile") == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("make bundle", "make package", r"step bundle runs `make package`: no such target"),
        ("make lint", "tflint --recursive", r"step lint runs `tflint`, not a known tool"),
        (
            "- id: test\n    name: gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators",
            "- id: test\n    name: python:3.12",
            r"the test step does not run in the cloud-sdk emulators image",
        ),
        ('!= "main"', '!= ""', r"the apply step is not guarded"),
        ("_ENV: dev", "_ENVIRONMENT: dev", r"does not take the environment as _ENV"),
        ("steps:", "steps: [", r"cloudbuild.yaml does not parse"),
    ],
)
def test_the_cloudbuild_rule_catches(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = (rules.ROOT / "cloudbuild.yaml").read_text()
    assert old in text
    changed = tmp_path / "cloudbuild.yaml"
    changed.write_text(text.replace(old, new, 1))
    problems = rules.check_cloudbuild(changed, rules.ROOT / "Makefile")
    assert reported(problems, expected), problems


# -- checkov --------------------------------------------------------------------------------

SKIP = re.compile(r"#checkov:skip=(CKV2?_[A-Z]+_\d+):(.+)")


def test_checkov_fails_nothing_and_every_skip_says_why() -> None:
    report = rules.checkov_results()
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    for check in report["results"]["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason) >= 60, f"{check['check_id']} on {check['resource']}: {reason!r}"
    skips = [m for tf in rules.TERRAFORM.rglob("*.tf") for m in SKIP.finditer(tf.read_text())]
    assert skips, "the known exceptions (public webhook, ...) are skipped in the code"


def test_checkov_reports_what_breaks_its_rules(tmp_path: Path) -> None:
    # A copy where a bucket may become public and the function module's public-ingress
    # exception lost its skip: both must come back as failed checks.
    copy = tmp_path / "terraform"
    shutil.copytree(rules.TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform"))
    bucket = copy / "modules" / "private_bucket" / "main.tf"
    bucket.write_text(bucket.read_text().replace('public_access_prevention    = "enforced"', ""))
    function = copy / "modules" / "function" / "main.tf"
    function.write_text(re.sub(r"  #checkov:skip=CKV_GCP_124:.*\n", "", function.read_text()))
    report = rules.checkov_results(copy)
    failed = {
        (c["check_id"], c["resource"].split(".")[-3]) for c in report["results"]["failed_checks"]
    }
    assert ("CKV_GCP_114", "images_bucket") in failed
    assert ("CKV_GCP_124", "webhook") in failed
    assert ("CKV_GCP_124", "api") in failed
    assert not any(c == "CKV_GCP_124" and f not in ("api", "webhook") for c, f in failed)


# -- the first admin key --------------------------------------------------------------------


class _FakeFirestore:
    """Just what ApiKeyRepository.put/get touch: collection(...).document(...).set/get."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}

    def collection(self, name: str) -> Any:
        docs = self.docs

        class Document:
            def __init__(self, doc_id: str) -> None:
                self.key = (name, doc_id)

            def set(self, data: dict[str, Any]) -> None:
                docs[self.key] = dict(data)

            def get(self) -> Any:
                data = docs.get(self.key)

                class Snapshot:
                    exists = data is not None

                    def to_dict(self) -> dict[str, Any] | None:
                        return data

                return Snapshot()

        class Collection:
            def document(self, doc_id: str) -> Document:
                return Document(doc_id)

        return Collection()


def test_the_bootstrap_key_is_an_admin_key_the_api_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from google.cloud import firestore

    from imagegen.auth import authenticate
    from imagegen.repository import ApiKeyRepository
    from infra import bootstrap_key

    clients: list[_FakeFirestore] = []
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(
        firestore, "Client", lambda project: clients.append(_FakeFirestore(project)) or clients[-1]
    )
    assert bootstrap_key.main(["--project", "imagegen-prod"]) == 0
    api_key = capsys.readouterr().out.strip()
    (client,) = clients
    assert client.project == "imagegen-prod"
    assert api_key.startswith("igk_") and api_key not in str(client.docs)  # only its hash
    principal = authenticate(ApiKeyRepository(client), f"Bearer {api_key}")  # type: ignore[arg-type]
    assert (principal.user_id, principal.role) == ("admin", "admin")
