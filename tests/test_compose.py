"""docker-compose.temporal.yml cannot run here (no Docker engine), so check it is sound."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.temporal.yml").read_text())
SERVICES = COMPOSE["services"]


AGENT_SERVICES = ("worker", "codec-server")


class TestComposeFile:
    """The compose file describes a persistent Temporal with UI, an S3 store, workers sharing no disk, and the codec server."""

    def test_has_the_services(self) -> None:
        assert set(SERVICES) == {
            "postgresql", "temporal-schema", "temporal", "temporal-namespace", "temporal-ui",
            "minio", "minio-bucket", "worker", "codec-server",
        }

    def test_images_are_pinned(self) -> None:
        for name, service in SERVICES.items():
            if "build" in service:
                continue
            image = service["image"]
            _repo, _, tag = image.partition(":")
            assert tag and tag != "latest", f"{name}: image {image!r} must be pinned"
        assert SERVICES["temporal"]["image"].startswith("temporalio/server:")
        assert SERVICES["temporal-schema"]["image"].startswith("temporalio/admin-tools:")
        assert SERVICES["temporal-ui"]["image"].startswith("temporalio/ui:")
        assert SERVICES["postgresql"]["image"].startswith("postgres:")
        assert SERVICES["minio"]["image"].startswith("minio/minio:RELEASE.")
        assert not any("auto-setup" in str(s.get("image")) for s in SERVICES.values()), "auto-setup is no longer built"

    def test_schema_is_set_up_before_the_server_starts(self) -> None:
        script = "\n".join(SERVICES["temporal-schema"]["command"])
        for db in ("temporal", "temporal_visibility"):
            assert db in script
        assert "setup-schema" in script and "update-schema" in script and "postgres12" in script
        assert SERVICES["temporal"]["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
        assert SERVICES["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgresql"
        assert SERVICES["temporal"]["environment"]["DB"] == "postgres12"

    def test_ports_match_the_defaults_the_cli_and_starter_use(self) -> None:
        assert "7233:7233" in SERVICES["temporal"]["ports"]
        assert "8233:8080" in SERVICES["temporal-ui"]["ports"]
        assert "8081:8081" in SERVICES["codec-server"]["ports"]
        assert "ports" not in SERVICES["postgresql"], "the database need not be exposed"
        assert "ports" not in SERVICES["minio"], "the store is reached by the workers only"

    def test_every_long_running_service_has_a_health_check_and_waits_for_health(self) -> None:
        for name in ("postgresql", "temporal", "temporal-ui", "minio", "worker", "codec-server"):
            check = SERVICES[name]["healthcheck"]
            assert check["test"][0] in ("CMD", "CMD-SHELL") and check["retries"] >= 3, name
        assert SERVICES["temporal-ui"]["depends_on"]["temporal"]["condition"] == "service_healthy"
        assert SERVICES["worker"]["depends_on"]["temporal"]["condition"] == "service_healthy"
        assert SERVICES["worker"]["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
        assert SERVICES["worker"]["healthcheck"]["test"][-1] == "--check"

    def test_workers_share_the_s3_store_and_no_volume(self) -> None:
        worker = SERVICES["worker"]
        env = worker["environment"]
        assert "volumes" not in worker and worker["deploy"]["replicas"] >= 2
        assert env["AGENT_STORE_URL"].startswith("s3://durable-agent/")
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        bucket_script = "\n".join(SERVICES["minio-bucket"]["command"])
        assert "mc mb --ignore-existing store/durable-agent" in bucket_script
        assert "--expire-days" in bucket_script and "named" not in bucket_script
        assert set(COMPOSE["volumes"]) == {"temporal-postgres", "minio-data"}

    def test_secrets_come_from_an_env_file_never_the_compose_file(self) -> None:
        text = (ROOT / "docker-compose.temporal.yml").read_text()
        assert "AGENT_ENCRYPTION_KEYS=" not in text and "AGENT_CODEC_TOKEN:" not in text
        for name in AGENT_SERVICES:
            assert SERVICES[name]["env_file"] == "deploy/agent.env"
        example = (ROOT / "deploy" / "agent.env.example").read_text()
        assert "AGENT_ENCRYPTION_KEYS=" in example and "AGENT_CODEC_TOKEN=" in example
        assert "deploy/agent.env" in (ROOT / ".gitignore").read_text().splitlines()

    def test_example_keys_refuse_to_start(self) -> None:
        """Shipped placeholders stop the worker rather than encrypt with a known key."""
        from durable_agent.encryption import EncryptionConfigError, KeyRing

        line = next(li for li in (ROOT / "deploy" / "agent.env.example").read_text().splitlines() if li.startswith("AGENT_ENCRYPTION_KEYS="))
        with pytest.raises(EncryptionConfigError):
            KeyRing.parse(line.partition("=")[2])

    def test_graceful_stop_outlasts_the_workers_grace(self) -> None:
        worker = SERVICES["worker"]
        grace = float(worker["environment"]["AGENT_SHUTDOWN_GRACE_SECONDS"])
        assert float(worker["stop_grace_period"].rstrip("s")) > grace

    def test_ui_uses_the_codec_server(self) -> None:
        ui = SERVICES["temporal-ui"]["environment"]
        assert ui["TEMPORAL_CODEC_ENDPOINT"] == "http://localhost:8081"
        codec = SERVICES["codec-server"]["command"]
        assert codec[:2] == ["durable-agent", "codec-server"] and "http://localhost:8233" in codec

    def test_worker_uses_the_standard_environment_and_no_baked_secret(self) -> None:
        worker = SERVICES["worker"]
        env = worker["environment"]
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
        assert env["AGENT_TASK_QUEUE"] == "agents"
        assert env["ANTHROPIC_API_KEY"].startswith("${ANTHROPIC_API_KEY")
        assert "worker.py" in worker["command"]
        dockerfile = (ROOT / worker["build"]["dockerfile"]).read_text()
        assert 'CMD ["python", "worker.py"]' in dockerfile
        for path in ("durable_agent", "workflows", "activities", "worker.py", "agents.toml"):
            assert path in dockerfile, f"the image must contain {path}"
