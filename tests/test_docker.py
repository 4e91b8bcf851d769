"""docker/: the compose file's commands are valid `harness` and `mlflow` command lines, and
the images it builds exist and copy what is there (no Docker engine here to build them)."""

from __future__ import annotations

from pathlib import Path

import click
import typer
import yaml

from experiments.cli import app

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _parse(group: click.Group, args: list[str]) -> click.Context:
    """Parse `args` as `group`'s command line without running it (raises if invalid)."""
    name, *rest = args
    command = group.get_command(click.Context(group), name)
    assert command is not None, f"no command '{name}'"
    return command.make_context(name, rest)


def test_compose_commands_are_valid_command_lines() -> None:
    from mlflow.cli import cli as mlflow_cli

    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    harness = typer.main.get_command(app)
    parsed = {}
    for name, service in services.items():
        if "build" not in service:
            continue
        dockerfile = DOCKER.parent / service["build"]["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        entrypoint = service.get("entrypoint", ["harness"])
        group = mlflow_cli if entrypoint == ["mlflow"] else harness
        parsed[name] = _parse(group, [str(arg) for arg in service["command"]]).params
    search, worker = parsed["search"], parsed["worker"]
    assert Path(search["config"]).name == "digits_cnn_search.yaml"
    config = yaml.safe_load(
        (DOCKER.parent / "experiments/configs/digits_cnn_search.yaml").read_text()
    )
    assert worker["study"] == (config["search"].get("study") or config["tracking"]["experiment"])
    assert worker["storage"] == search["storage"]  # one study
    assert worker["tracking_uri"] == search["tracking_uri"] == "http://mlflow:5000"
    assert parsed["mlflow"]["backend_store_uri"].endswith("/mlflow")
    assert not search["storage"].endswith("/mlflow")  # Optuna and MLflow: one database each
    init = (DOCKER / "postgres-init.sql").read_text()
    assert f"CREATE DATABASE {search['storage'].rsplit('/', 1)[1]}" in init
    for name in ("search", "worker"):  # one GPU per trial container
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["count"] == 1


def test_dockerfiles_copy_what_exists_and_install_the_postgres_extra() -> None:
    for dockerfile in DOCKER.glob("Dockerfile*"):
        text = dockerfile.read_text()
        for line in text.splitlines():
            if line.startswith("COPY "):
                *sources, _ = line.split()[1:]
                for source in sources:
                    assert (DOCKER.parent / source).exists(), f"{dockerfile.name}: {source}"
        assert "postgres" in text, dockerfile.name
    assert "gpu" in (DOCKER / "Dockerfile.gpu").read_text()


def test_no_password_is_written_and_nothing_is_published_unless_asked() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    required = "${POSTGRES_PASSWORD:?"  # compose refuses to start while it is unset or empty
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(required)
    urls = [arg for s in services.values() for arg in s.get("command", []) if "://" in str(arg)]
    urls += [compose["x-storage"]]
    for url in urls:
        if url.startswith("postgresql"):
            credentials = url.split("://", 1)[1].split("@", 1)[0]
            assert credentials.split(":", 1)[1].startswith(required), url
    assert "ports" not in services["postgres"]  # the database: published only when asked
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port  # the UI: this machine's only
    remote = yaml.safe_load((DOCKER / "compose.remote-workers.yaml").read_text())
    assert remote["services"] == {"postgres": {"ports": ["5432:5432"]}}
    example = (DOCKER / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=\n" in example  # a name to fill in, never a value


def test_the_kuberay_cluster_runs_the_gpu_image_with_gpu_workers_and_a_valid_search() -> None:
    text = (DOCKER / "kuberay-raycluster.yaml").read_text()
    cluster = yaml.safe_load(text)
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    (workers,) = cluster["spec"]["workerGroupSpecs"]
    images = {
        container["image"]
        for group in (head, workers)
        for container in group["template"]["spec"]["containers"]
    }
    assert images == {"REGISTRY/keras-harness-gpu:latest"}
    assert "docker build -f docker/Dockerfile.gpu -t REGISTRY/keras-harness-gpu:latest" in text
    assert "ray" in (DOCKER / "Dockerfile.gpu").read_text().split("pip install")[1]
    (worker,) = workers["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert workers["rayStartParams"]["num-gpus"] == "1"
    assert head["rayStartParams"]["num-gpus"] == "0"  # trials go to the GPU workers
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    (command,) = [
        line.removeprefix("#").strip()
        for line in text.splitlines()
        if line.removeprefix("#").strip().startswith("harness search")
    ]
    args = command.split()[1:]
    params = _parse(typer.main.get_command(app), args).params
    assert params["launcher"] == "ray" and params["ray_address"] == "auto"
    assert (DOCKER.parent / params["config"].removeprefix("/app/")).is_file()
