"""docker-compose.temporal.yml cannot run here (no Docker engine), so check it is sound."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.temporal.yml").read_text())
SERVICES = COMPOSE["services"]


class TestComposeFile:
    """The compose file describes a persistent Temporal with UI and workers."""

    def test_has_the_four_services(self) -> None:
        assert set(SERVICES) == {"postgresql", "temporal", "temporal-ui", "worker"}

    def test_images_are_pinned(self) -> None:
        for name, service in SERVICES.items():
            if "build" in service:
                continue
            image = service["image"]
            repo, _, tag = image.partition(":")
            assert tag and tag != "latest", f"{name}: image {image!r} must be pinned"
        assert SERVICES["temporal"]["image"].startswith("temporalio/auto-setup:")
        assert SERVICES["temporal-ui"]["image"].startswith("temporalio/ui:")
        assert SERVICES["postgresql"]["image"].startswith("postgres:")

    def test_ports_match_the_defaults_the_cli_and_starter_use(self) -> None:
        assert "7233:7233" in SERVICES["temporal"]["ports"]
        assert "8233:8080" in SERVICES["temporal-ui"]["ports"]
        assert "ports" not in SERVICES["postgresql"], "the database need not be exposed"

    def test_every_long_running_service_has_a_health_check_and_waits_for_health(self) -> None:
        for name in ("postgresql", "temporal", "temporal-ui"):
            check = SERVICES[name]["healthcheck"]
            assert check["test"][0] in ("CMD", "CMD-SHELL") and check["retries"] >= 3, name
        assert SERVICES["temporal"]["depends_on"]["postgresql"]["condition"] == "service_healthy"
        assert SERVICES["temporal-ui"]["depends_on"]["temporal"]["condition"] == "service_healthy"
        assert SERVICES["worker"]["depends_on"]["temporal"]["condition"] == "service_healthy"

    def test_state_lives_in_named_volumes(self) -> None:
        declared = set(COMPOSE["volumes"])
        assert declared == {"temporal-postgres", "agent-state"}
        pg_volume = SERVICES["postgresql"]["volumes"][0]
        assert pg_volume.split(":")[0] == "temporal-postgres" and pg_volume.endswith("/var/lib/postgresql/data")
        worker_volume = SERVICES["worker"]["volumes"][0]
        assert worker_volume.split(":")[0] == "agent-state"
        assert worker_volume.split(":")[1] == SERVICES["worker"]["environment"]["AGENT_STATE_DIR"]

    def test_temporal_points_at_the_database(self) -> None:
        env = SERVICES["temporal"]["environment"]
        assert env["POSTGRES_SEEDS"] == "postgresql"
        assert env["DB"] == "postgres12"

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
