"""The ``lamra`` command line: one sub-command per job."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time unless asked
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer

# Help is plain text: Rich markup would swallow "[ray]" in "pip install 'lamra[ray]'" as a style tag.
app = typer.Typer(help="LamRA: a large multimodal model as a universal retrieval assistant.", no_args_is_help=True,
                  rich_markup_mode=None)
data_app = typer.Typer(help="Build and inspect M-BEIR-format data.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


def _mount_train() -> None:
    from lamra.train.cli import train_app

    app.add_typer(train_app, name="train", help="Train LamRA-Ret (stages 0/1/2) and LamRA-Rank; mine; merge.")


_mount_train()

ModelOption = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Checkpoint dir or hub id; default: the shipped compact model."),
]
PRECISIONS = ("auto", "bf16", "fp32", "bf16-weights")


def check_precision(value: str) -> str:
    if value not in PRECISIONS:
        raise typer.BadParameter(f"must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


PrecisionOption = Annotated[str, typer.Option(
    callback=check_precision,
    help="auto (bf16 autocast where supported), bf16, fp32, or bf16-weights (the weights themselves in bf16: "
         "faster and lighter, embeddings within 0.999 cosine of fp32; benchmarks/encode.py).")]


def check_backend(value: str) -> str:
    from lamra.backbones.openvino_engine import check_backend as check

    try:
        return check(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


BackendOption = Annotated[str, typer.Option(
    callback=check_backend,
    help="torch, or openvino (compact model on CPU; pip install 'lamra[openvino]'): the vision trunk and the "
         "decoder run in OpenVINO, about 1.3x faster encoding (benchmarks/encode.py).")]


def check_expand(value: int) -> int:
    if value < 0:
        raise typer.BadParameter(f"must be 0 (off) or a number of hits >= 1, got {value}")
    return value


ExpandOption = Annotated[int, typer.Option(
    "--expand", callback=check_expand,
    help="Query expansion: search again with each query moved toward the mean of its first N hits "
         "(pseudo-relevance feedback; 0: off). results/query_expansion.md: 2 lifts a mixed pool most.")]
ExpandWeightOption = Annotated[float, typer.Option(
    "--expand-weight", min=0.0, help="With --expand: how far the query moves toward its hits' mean (the query counts 1).")]


def query_expansion(expand: int, weight: float):
    from lamra.query_expansion import QueryExpansion

    try:
        return QueryExpansion(top=expand, weight=weight) if expand else None
    except ValueError as error:  # e.g. --expand-weight nan
        raise typer.BadParameter(str(error)) from None


def load_model(model: str | None, precision: str = "auto", reranker: str | None = None, backend: str = "torch"):
    import torch

    from lamra.items import InputError
    from lamra.model import SHIPPED_DIR, LamRA

    if backend == "openvino":
        if precision == "bf16-weights":
            raise InputError("--backend openvino converts float32 weights and computes in the --precision it is "
                             "given (auto, bf16 or fp32), not bf16-weights")
        from lamra.backbones.openvino_engine import import_openvino

        try:
            import_openvino()  # before the model loads
        except ImportError as error:
            raise InputError(str(error)) from None
    dtype = torch.float32
    if precision == "bf16-weights":
        dtype, precision = torch.bfloat16, "bf16"

    if model is None and not (SHIPPED_DIR / "lamra.json").is_file():
        from lamra.backbones.compact import CompactBackbone

        typer.secho(
            "No trained compact weights are shipped in this build: using the untrained base model "
            "(pretrained parts, random projector). Rankings are not meaningful until it is trained.",
            fg=typer.colors.YELLOW,
            err=True,
        )
        backbone = CompactBackbone.from_parts()
        backbone.model.to(dtype)
        if backend == "openvino":
            from lamra.backbones.openvino_engine import use_openvino

            use_openvino(backbone, precision)
        return LamRA(backbone, precision=precision)
    try:
        return LamRA.from_pretrained(model, reranker=reranker, precision=precision, dtype=dtype, backend=backend)
    except OSError:  # not a directory here, so transformers took it for a hub id and could not fetch it
        missing = [f"{option} {str(name)!r}" for option, name in (("--model", model), ("--reranker", reranker))
                   if name is not None and not Path(name).exists()]
        if not missing:
            raise
        from lamra.items import InputError

        raise InputError(f"{' and '.join(missing)}: no such directory, and no Hugging Face model of that "
                         "name could be loaded") from None


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@app.command()
def demo(model: ModelOption = None, precision: PrecisionOption = "auto", top_k: int = 3,
         backend: BackendOption = "torch") -> None:
    """Encode the bundled emoji collection and answer a text query and an image query."""
    from lamra.demo import run_demo

    run_demo(load_model(model, precision, backend=backend), top_k=top_k, echo=typer.echo)


def parse_queries(queries: list[str]) -> list[str | Path]:
    """Command-line queries as items (``@path``: an image), each checked before anything is loaded
    or encoded, so a typo fails at once and not after the whole collection has been encoded."""
    from lamra.items import InputError, to_segments

    parsed: list[str | Path] = []
    for number, query in enumerate(queries, start=1):
        item = Path(query[1:]) if query.startswith("@") else query
        try:
            to_segments(item)
        except InputError as error:
            raise InputError(f"query {number} ({query!r}): {error}") from None
        parsed.append(item)
    return parsed


@app.command()
def search(
    queries: Annotated[list[str], typer.Argument(help="Query texts; prefix an image path with @ (e.g. @cat.png).")],
    collection: Annotated[Optional[Path], typer.Option(
        help="A jsonl of candidates with txt and/or img_path, encoded now.")] = None,
    index_dir: Annotated[Optional[Path], typer.Option(
        "--index", help="Or: a directory `lamra index` built (searched without encoding its pool again).")] = None,
    image_root: Annotated[Optional[Path], typer.Option(
        help="Root for img_path; default: the jsonl's folder (with --index: the pool's M-BEIR root).")] = None,
    instruction: Annotated[Optional[str], typer.Option(help="Instruction prefixed to each query.")] = None,
    top_k: int = 5,
    rerank: Annotated[Optional[str], typer.Option(help="pointwise, listwise or listwise-parity (needs a reranker).")] = None,
    expand: ExpandOption = 0,
    expand_weight: ExpandWeightOption = 2.0,
    model: ModelOption = None,
    precision: PrecisionOption = "auto",
    backend: BackendOption = "torch",
) -> None:
    """Search a jsonl collection, or an index built by `lamra index`, with text or image queries and print
    the ranked hits."""
    from lamra.collection import embed_collection, open_indexed_collection, read_collection, record_id
    from lamra.items import InputError, check_top_k

    check_top_k(top_k, "--top-k")
    if (collection is None) == (index_dir is None):
        raise InputError("give one of --collection (a jsonl, encoded now) or --index (a directory `lamra index` built)")
    parsed = parse_queries(queries)
    if index_dir is not None:  # the index and its pool are checked before the model loads
        searched = open_indexed_collection(index_dir, model or "compact", image_root)
        lamra = load_model(model, precision, backend=backend)
    else:
        image_root = image_root or collection.parent
        records = read_collection(collection, image_root)
        lamra = load_model(model, precision, backend=backend)
        searched = embed_collection(lamra, records, image_root)
    results = searched.search(lamra, parsed, instruction=instruction, top_k=top_k, rerank=rerank, rerank_top_k=top_k,
                              query_expansion=query_expansion(expand, expand_weight))
    for query, hits in zip(queries, results, strict=True):
        typer.echo(f"\n{query}")
        for rank, hit in enumerate(hits, start=1):
            record = searched.records[hit.id]
            typer.echo(f"  {rank}. {record_id(record, hit.id)}  {hit.score:.3f}  {record.get('txt') or ''} {record.get('img_path') or ''}")


@app.command()
def serve(
    collection: Annotated[Optional[Path], typer.Option(help="A jsonl of candidates; default: the demo collection.")] = None,
    index_dir: Annotated[Optional[Path], typer.Option(
        "--index", help="Or: a directory `lamra index` built (its pool is not encoded again).")] = None,
    image_root: Annotated[Optional[Path], typer.Option(
        help="Root for img_path; default: the jsonl's folder (with --index: the pool's M-BEIR root).")] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: ModelOption = None,
    precision: PrecisionOption = "auto",
    backend: BackendOption = "torch",
    max_body_mb: Annotated[float, typer.Option(help="Largest request body (MB); larger ones get 413.")] = 16.0,
    max_encode_items: Annotated[int, typer.Option(help="Most items in one /encode request.")] = 64,
    max_top_k: Annotated[int, typer.Option(help="Largest top_k a /search may ask for.")] = 100,
    max_image_pixels: Annotated[int, typer.Option(help="Largest image (width x height) a request may send.")] = 40_000_000,
) -> None:
    """Serve search over a collection: HTTP API (/encode, /search) and a web page at /."""
    import uvicorn

    from lamra.collection import embed_collection, open_indexed_collection, read_collection
    from lamra.demo import DEMO_DIR
    from lamra.items import InputError
    from lamra.serve.app import ServerLimits, create_app

    limits = ServerLimits(int(max_body_mb * 1024 * 1024), max_encode_items, max_top_k, max_image_pixels)
    if min(limits.max_body_bytes, max_encode_items, max_top_k, max_image_pixels) <= 0:
        raise InputError("server limits (--max-body-mb, --max-encode-items, --max-top-k, --max-image-pixels) must be positive")
    if collection is not None and index_dir is not None:
        raise InputError("give --collection (a jsonl, encoded at start) or --index (a directory `lamra index` built), not both")
    if index_dir is not None:  # a bad index or pool fails before the model loads
        searched = open_indexed_collection(index_dir, model or "compact", image_root)
        lamra = load_model(model, precision, backend=backend)
    else:
        path = collection or DEMO_DIR / "collection.jsonl"
        image_root = image_root or path.parent
        records = read_collection(path, image_root)  # a bad collection fails before the model loads
        lamra = load_model(model, precision, backend=backend)
        searched = embed_collection(lamra, records, image_root)
    _ = lamra.reranker  # load LamRA-Rank now, so the first rerank request does not wait for it
    uvicorn.run(create_app(lamra, searched, limits), host=host, port=port)


@app.command()
def index(
    pool: Annotated[Path, typer.Argument(help="An M-BEIR candidate pool jsonl.")],
    out: Annotated[Path, typer.Option(help="Index directory (written atomically; a killed run resumes).")],
    image_root: Annotated[Optional[Path], typer.Option(help="Root for img_path; default: the M-BEIR root.")] = None,
    index_type: Annotated[str, typer.Option("--index-type", help="flat (exact), ivf[N], ivfpq, ivfpqfs, hnsw[M], hnsw[M]-pca[D], or a FAISS factory string.")] = "flat",
    batch_size: int = 32,
    model: ModelOption = None,
    precision: PrecisionOption = "auto",
    backend: BackendOption = "torch",
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray", help="Encode on Ray (pip install 'lamra[ray]'): 'local' starts a local instance, 'auto' or "
                      "an address joins a cluster.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray: model replicas (default: one per core).")] = None,
) -> None:
    """Encode a candidate pool into a FAISS index that loads without the model."""
    import functools

    from lamra.index_pool import index_pool, pool_image_root
    from lamra.items import InputError

    try:  # a bad --index-type fails at the first batch, not after the encoding
        if ray_address is None:
            built = index_pool(lambda: load_model(model, precision, backend=backend), pool, out, model_name=model or "compact",
                               image_root=image_root, batch_size=batch_size, index_type=index_type)
        else:
            try:
                from lamra.index_ray import ray_index_pool
            except ImportError:
                raise InputError("--ray needs Ray: pip install 'lamra[ray]'") from None
            built = ray_index_pool(functools.partial(load_model, model, precision, backend=backend), pool, out,
                                   model_name=model or "compact", image_root=pool_image_root(pool, image_root),
                                   address=None if ray_address == "local" else ray_address, workers=workers,
                                   batch_size=batch_size, index_type=index_type)
    except ValueError as error:
        raise InputError(str(error)) from None
    typer.echo(f"indexed {len(built)} candidates -> {out}")


def task_list(tasks: str | None) -> list[str] | None:
    """``--tasks a,b`` as a list (None: every task)."""
    return [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None


@app.command("eval")
def evaluate(
    data_root: Annotated[Path, typer.Argument(help="An M-BEIR-format directory (real M-BEIR or PocketBEIR).")],
    split: str = "test",
    pools: Annotated[str, typer.Option(help="Comma-separated: local, global.")] = "local",
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated task keys or dataset names.")] = None,
    rerank: Annotated[Optional[str], typer.Option(help="pointwise, listwise or listwise-parity (needs a reranker).")] = None,
    rerank_top_k: int = 10,
    rerank_weight: float = 1.0,
    expand: ExpandOption = 0,
    expand_weight: ExpandWeightOption = 2.0,
    minilm: Annotated[bool, typer.Option(help="Also evaluate the all-MiniLM-L6-v2 text baseline.")] = False,
    vision_tower: Annotated[bool, typer.Option(
        help="Also evaluate the frozen EfficientNet-Lite0 trunk (mean-pooled, image-only tasks).")] = False,
    out: Annotated[Path, typer.Option(help="Where results.json and TREC runs go.")] = Path("results/eval"),
    results_md: Annotated[Optional[Path], typer.Option(help="Also write a markdown page of tables.")] = None,
    batch_size: int = 32,
    model: ModelOption = None,
    reranker: Annotated[Optional[str], typer.Option(help="LamRA-Rank checkpoint (Qwen-VL).")] = None,
    precision: PrecisionOption = "auto",
    backend: BackendOption = "torch",
    index_dir: Annotated[Optional[Path], typer.Option(
        help="Keep each candidate pool's index here; a later run with the same weights, numerics and pool "
             "reads it instead of encoding the pool again.")] = None,
) -> None:
    """Evaluate on M-BEIR-format data: Recall@K per task, local/global pools, optional reranking."""
    import sys

    from lamra.evaluate.environment import numerics
    from lamra.evaluate.fusion import RerankMethod, model_reranker
    from lamra.evaluate.runner import evaluate_and_write

    lamra = load_model(model, precision, reranker=reranker, backend=backend)
    name = "LamRA-Ret" if model is None else Path(model).name or str(model)
    lamra.name = index_cache_name(name, model, lamra)  # keys its cached pool indexes (evaluate_mbeir)
    expansion = query_expansion(expand, expand_weight)
    if expansion is not None and (minilm or vision_tower):
        raise typer.BadParameter("--expand applies to every row of one run: evaluate the baselines without it")
    if expansion is not None:
        name += f" + query expansion (top {expansion.top}, weight {expansion.weight:g})"
    methods = {name: lamra}
    rerankers = {}
    if rerank:
        rerankers[name] = [RerankMethod(f"{name} + {rerank} rerank (top {rerank_top_k})",
                                        model_reranker(lamra, data_root, mode=rerank), rerank_top_k,
                                        default_weight=rerank_weight)]
    if minilm:
        from lamra.evaluate.baselines import MiniLMEncoder

        methods["all-MiniLM-L6-v2"] = MiniLMEncoder()
    if vision_tower:
        from lamra.evaluate.baselines import VisionTowerEncoder

        methods[VisionTowerEncoder.name] = VisionTowerEncoder()
    written = evaluate_and_write(
        methods, data_root, out, command="lamra " + " ".join(sys.argv[1:]), results_md=results_md,
        rerankers=rerankers, split=split, pools=tuple(p.strip() for p in pools.split(",")),
        tasks=task_list(tasks), batch_size=batch_size, index_dir=index_dir, query_expansion=expansion,
    )
    for path in written:
        typer.echo(f"wrote {path}")
    computed_in = numerics(lamra) or ""
    if "bf16" in computed_in:
        typer.echo(f"note: computed in {computed_in}, whose last bits depend on the CPU and the batches: on "
                   "another machine a task's recall may differ by a few queries. --precision fp32 gives the "
                   "reference numbers (about 3x slower on CPU).")


def index_cache_name(name: str, model: str | None, lamra) -> str:
    """What an evaluation's cached pool indexes are kept under: the model's name, its weights (a light
    checkpoint's retrieval digest, else the path as given) and how it computes (bf16 and fp32 vectors
    differ in their last bits, so each keeps its own)."""
    from lamra.evaluate.environment import numerics
    from lamra.evaluate.report import safe_name
    from lamra.light_checkpoint import role_digest
    from lamra.model import LIGHT_CONFIG, SHIPPED_DIR

    path = SHIPPED_DIR if model is None else Path(model)
    weights = role_digest(path) if (path / LIGHT_CONFIG).is_file() else str(model)
    return safe_name(f"{name}_{weights}_{numerics(lamra)}")


@app.command()
def diagnose(
    data_root: Annotated[Path, typer.Argument(help="An M-BEIR-format directory (its global pool is sampled).")],
    split: str = "val",
    per_modality: Annotated[int, typer.Option(help="Items sampled per modality (seeded).")] = 48,
    model: ModelOption = None,
    precision: PrecisionOption = "auto",
    backend: BackendOption = "torch",
    rerank: Annotated[bool, typer.Option(help="Also: does the reranker order each query's top k better than a coin flip?")] = False,
    reranker: Annotated[Optional[str], typer.Option(help="LamRA-Rank checkpoint (default: the model's own).")] = None,
    queries_per_task: Annotated[int, typer.Option(help="With --rerank or --generalization: queries sampled per task (seeded).")] = 50,
    tasks: Annotated[Optional[str], typer.Option(help="With --rerank or --generalization: comma-separated task keys or dataset names.")] = None,
    top_k: Annotated[int, typer.Option(help="With --rerank: the retrieved depth the reranker scores.")] = 10,
    generalization: Annotated[bool, typer.Option(help="Also: recall on training queries beside the split's (does the model learn the task or its training items?).")] = False,
) -> None:
    """Does the model tell items apart? Mean pairwise cosine of different items, per modality; with
    --rerank, the pairwise AUC of reranker and retriever within each query's top k, per task; with
    --generalization, each task's recall on a sample of training queries beside the split's."""
    from lamra.evaluate.diagnostics import embedding_spread, spread_table

    if per_modality < 2:
        raise typer.BadParameter(f"--per-modality must be at least 2, got {per_modality}")
    if rerank and (queries_per_task < 1 or top_k < 2):
        raise typer.BadParameter("--rerank needs --queries-per-task >= 1 and --top-k >= 2")
    if generalization and queries_per_task < 1:
        raise typer.BadParameter("--generalization needs --queries-per-task >= 1")
    from lamra.data.mbeir import MBEIRDataset

    MBEIRDataset(data_root)  # a missing root is named before the model loads
    lamra = load_model(model, precision, reranker=reranker, backend=backend)
    if rerank and not lamra.has_reranker:
        raise typer.BadParameter("--rerank: the model has no reranker; give --reranker")
    typer.echo(spread_table(embedding_spread(lamra, data_root, split, per_modality)))
    if rerank:
        from lamra.evaluate.diagnostics import rerank_separation, separation_table
        from lamra.evaluate.fusion import RerankMethod, model_reranker
        from lamra.evaluate.runner import evaluate_mbeir

        method = RerankMethod("pointwise", model_reranker(lamra, data_root, mode="pointwise"), top_k)
        report = evaluate_mbeir(lamra, data_root, method="retrieval", split=split, rerankers=[method],
                                queries_per_task=queries_per_task, tasks=task_list(tasks))
        typer.echo("\n" + separation_table(rerank_separation(report, method.name), top_k))
    if generalization:
        from lamra.evaluate.diagnostics import generalization_gap, generalization_table

        rows = generalization_gap(lamra, data_root, split, queries_per_task=queries_per_task, tasks=task_list(tasks))
        typer.echo("\n" + generalization_table(rows, split))


@data_app.command("build")
def data_build(
    name: Annotated[str, typer.Argument(help="Which benchmark to build: pocketbeir.")] = "pocketbeir",
    fixture: Annotated[bool, typer.Option(help="Build the small (<=100 emoji) fixture used by tests.")] = False,
    seed: int = 0,
    out: Annotated[Optional[Path], typer.Option(help="Output dir; default $LAMRA_HOME/pocketbeir.")] = None,
    sources: Annotated[Optional[Path], typer.Option(help="Source packages; default $LAMRA_HOME/sources.")] = None,
) -> None:
    """Build an M-BEIR-format benchmark (PocketBEIR: emoji + WordNet, all eight task types)."""
    if name != "pocketbeir":
        raise typer.BadParameter(f"unknown benchmark {name!r}; available: pocketbeir")
    from lamra.pocketbeir.build import build_pocketbeir

    try:
        path = build_pocketbeir(out_dir=out, sources_dir=sources, seed=seed, fixture=fixture)
    except FileNotFoundError as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"built {path}")


def run() -> None:
    """The ``lamra`` console entry point: bad input is one clear line on stderr, exit status 2."""
    from lamra.items import InputError

    try:
        app(standalone_mode=True)
    except InputError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
