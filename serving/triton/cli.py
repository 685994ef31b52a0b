"""``oncotriage deploy triton``: write a registered model version into a Triton model repository.

Light imports only at module level; the registry (MLflow) is imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oncotriage.serving.triton.config import DEFAULT_PREFERRED_BATCH_SIZES, Flavor

deploy_app = typer.Typer(
    name="deploy",
    help="Deploy registered models to serving engines (Triton Inference Server).",
    no_args_is_help=True,
)


def model_uri(text: str) -> str:
    """``NAME@ALIAS`` / ``NAME/VERSION`` / a bundle folder / a full URI -> a registry URI."""
    if text.startswith(("models:/", "runs:/")) or Path(text).expanduser().is_dir():
        return text
    return f"models:/{text}"


@deploy_app.command("triton")
def deploy_triton(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="NAME@ALIAS, NAME/VERSION (MLflow registry) or a bundle folder."
        ),
    ],
    repository: Annotated[
        Path, typer.Option("--repository", "-r", help="Triton model repository folder.")
    ],
    flavor: Annotated[
        Flavor,
        typer.Option(
            help="gpu: onnxruntime backend + TensorRT FP16 (NGC image); portable: ONNX Runtime "
            "in a Python-backend model (any tritonserver, CPU)."
        ),
    ] = Flavor.GPU,
    name: Annotated[
        str | None, typer.Option(help="Triton model name (default: the registered name).")
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(help="Triton version for a bundle folder (registry versions are kept)."),
    ] = None,
    max_batch_size: Annotated[int, typer.Option(min=0)] = 8,
    preferred_batch_size: Annotated[
        list[int] | None,
        typer.Option(help="Dynamic batcher's preferred sizes (repeat the option)."),
    ] = None,
    max_queue_delay_us: Annotated[int, typer.Option(min=0)] = 2000,
    dynamic_batching: Annotated[bool, typer.Option(help="Let Triton batch requests.")] = True,
    instances: Annotated[int, typer.Option(min=1, help="Instances per GPU (gpu) or in total.")] = 1,
    keep_versions: Annotated[
        int, typer.Option(min=1, help="Versions kept loaded: this one and previous ones.")
    ] = 2,
    trt_precision: Annotated[str, typer.Option(help="FP16, FP32, INT8 or none.")] = "FP16",
    trt_engine_cache_path: Annotated[
        str | None,
        typer.Option(
            help="TensorRT engine cache inside the Triton container (default /engine_cache/<name>)."
        ),
    ] = None,
    load: Annotated[
        list[str] | None,
        typer.Option(help="gRPC host:port of a running Triton to load the version on (repeat)."),
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Write a model version into a Triton model repository (and optionally load it).

    The version folder holds model.onnx and model_spec.json; config.pbtxt lists the versions kept
    live. Triton versions are MLflow model versions.
    """
    from oncotriage.models.registry import RegistryError, resolve
    from oncotriage.serving.triton.backend import TritonDeployer, triton_version
    from oncotriage.serving.triton.repository import write_model

    try:
        resolved = resolve(model_uri(model), tracking_uri=tracking_uri)
    except RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    model_name = name or resolved.name
    model_version = version if version is not None else triton_version(resolved)
    try:
        written = write_model(
            repository,
            resolved.bundle_dir,
            resolved.spec,
            model_name=model_name,
            version=model_version,
            flavor=flavor,
            max_batch_size=max_batch_size,
            preferred_batch_sizes=tuple(preferred_batch_size or DEFAULT_PREFERRED_BATCH_SIZES),
            max_queue_delay_us=max_queue_delay_us,
            dynamic_batching=dynamic_batching,
            instances=instances,
            keep_versions=keep_versions,
            trt_precision=None if trt_precision.lower() == "none" else trt_precision.upper(),
            trt_engine_cache_path=trt_engine_cache_path,
        )
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"wrote {model_name} version {model_version} ({flavor.value}) to "
        f"{written.model_dir / str(model_version)}; live versions {list(written.versions)}"
    )
    typer.echo(f"config: {written.config_path}")
    for url in load or []:
        deployer = TritonDeployer(url, None)
        deployer.load(url, model_name)
        deployer.wait_version_ready(url, model_name, model_version)
        typer.echo(f"loaded {model_name} version {model_version} on {url}")


def register(app: typer.Typer) -> None:
    """Add ``oncotriage deploy ...`` to the root ``oncotriage`` app."""
    app.add_typer(deploy_app, name="deploy")
