"""The bodies of the ``shardstream`` sub-commands: each turns the parsed arguments into one
call of the library function that does the work (imported when the command runs, so
``shardstream --help`` loads none of them).  The parser is :mod:`shardstream.cli`'s."""

from __future__ import annotations

from ..errors import InputError


def _storage_options(args):
    """The storage_options that --timeout / --retries ask for (None: the defaults)."""
    opts = {k: getattr(args, k) for k in ("timeout", "retries") if getattr(args, k) is not None}
    return opts or None


# ---------------------------------------------------------------------------------------------
# converters: synth, convert, datasets


def cmd_synth(args):
    from ..converters.synth import synthesize

    synthesize(args.dataset, args.out, num_train=args.train, num_test=args.test, seed=args.seed,
               progress=not args.quiet)


def cmd_convert(args):
    if args.cluster:
        if args.size or args.skip_bad or args.label or args.classes:
            raise InputError("--cluster converts IDX datasets and image folders as they are; "
                             "--size, --skip-bad, --label and --classes need the conversion "
                             "in one process (leave out --cluster)")
        try:
            from ..converters.cluster import convert_on_cluster
        except ModuleNotFoundError as exc:
            raise InputError(f"--cluster needs Dask ({exc}): pip install 'shardstream[cluster]'"
                             ) from None

        convert_on_cluster(args.dataset, args.out, cluster=args.cluster, source=args.source,
                           raw=args.raw, formats=tuple(args.format), shard_size=args.shard_size,
                           encoding=args.encoding, overwrite=args.overwrite, name=args.name,
                           progress=not args.quiet)
        return
    from ..converters.convert import convert

    convert(args.dataset, args.out, source=args.source, raw=args.raw, formats=tuple(args.format),
            shard_size=args.shard_size, encoding=args.encoding, overwrite=args.overwrite,
            name=args.name, progress=not args.quiet, label=args.label, classes=args.classes,
            size=args.size, skip_bad=args.skip_bad, token=args.token,
            storage_options=_storage_options(args))


def cmd_datasets(args):
    from ..converters.datasets import print_datasets

    print_datasets(as_json=args.json)


# ---------------------------------------------------------------------------------------------
# shards: info, verify, upload, serve


def cmd_info(args):
    from .info import print_info

    print_info(args.location, as_json=args.json, token=args.token,
               storage_options=_storage_options(args))


def cmd_verify(args):
    from .info import verify_command

    return verify_command(args.location, quiet=args.quiet, token=args.token,
                          storage_options=_storage_options(args))


def cmd_upload(args):
    from ..storage.upload import upload

    report = upload(args.src, args.dest, progress=not args.quiet, jobs=args.jobs,
                    storage_options=_storage_options(args))
    print(report.summary())


def cmd_serve(args):
    from ..server.run import serve

    return serve(args.root, host=args.host, port=args.port, token=args.token, quiet=args.quiet)


def cmd_serve_batches(args):
    from ..service.app import serve_batches

    return serve_batches(args.root, host=args.host, port=args.port, token=args.token,
                         workers=args.workers, cache_memory=args.cache_memory, quiet=args.quiet)


# ---------------------------------------------------------------------------------------------
# loaders: show, bench, demo


def cmd_show(args):
    from ..book.show import show_command

    show_command(args.location, out=args.output, rows=args.rows, cols=args.cols,
                 random=args.random, seed=args.seed, resize=args.resize, scale=args.scale,
                 token=args.token, storage_options=_storage_options(args))


def cmd_bench(args):
    from .bench import bench_command

    bench_command(args.location, frameworks=args.framework, batch_sizes=args.batch_size,
                  workers=args.workers, epochs=args.epochs, resize=args.resize,
                  format=args.format, profile=args.profile, as_json=args.json, token=args.token,
                  storage_options=_storage_options(args))


def cmd_cache(args):
    from .cache import cache_command

    return cache_command(clear=args.clear, as_json=args.json)


def cmd_demo(args):
    from .demo import demo

    demo(out=args.out, quick=args.quick)


# ---------------------------------------------------------------------------------------------
