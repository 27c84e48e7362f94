"""A Spark standalone cluster on 127.0.0.1 and ``spark-submit`` of the corpus build.

Subcommands (``python -m jobs.cluster --help``):

* ``up``      start a master and N workers (default 2) from the installed pyspark's
              ``bin/spark-class`` (``org.apache.spark.deploy.master.Master`` /
              ``org.apache.spark.deploy.worker.Worker``); every daemon gets its own directory
              under ``--root`` (default ``build/cluster``) with its log, pid file and, for the
              workers, its own work directory (executors run there). ``make cluster-up``.
* ``down``    stop them (SIGTERM, then SIGKILL after a grace period). ``make cluster-down``.
* ``status``  print the master's view (workers alive, applications).
* ``pyfiles`` build the ``--py-files`` archive (``build/pyfiles.zip``: the Python sources of
              ``pipeline/ filters/ training/ jobs/``, no data). ``make pyfiles``.
* ``pack-env`` pack the virtualenv with venv-pack into ``build/env/env-<key>.tar.gz`` (key: hash
              of the installed packages; reused until they change). ``make pack-env``.
* ``submit``  run the configured stages (or ``--stages``) one ``spark-submit`` each, then the
              report, against ``--master``: the packed virtualenv ships with ``--archives
              env-<key>.tar.gz#env`` and executors run ``./env/bin/python``
              (``--no-ship-env``: the venv's own path), code with ``--py-files``, model files
              (``lid.176.ftz``, the quality models when present) with ``--files``, and the
              executors are told (``POLY_SHIP_STRICT=1``) to refuse any model path that did not
              arrive through ``SparkFiles``. Stages already published for the same input and
              config are skipped (``--force``, ``--from-stage`` redo). ``make cluster-submit`` or
              ``make corpus MASTER=spark://127.0.0.1:7077``.

Raw inputs (``--data-root``: a shared path or an ``s3a://``/``gs://``/``hdfs://`` URI) and the
output root (``--out``) must be on storage every node can read; everything else reaches the
executors through Spark.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Packages shipped to executors with --py-files (sources only; data never goes in the archive).
PYFILES_PACKAGES = ("pipeline", "filters", "training", "jobs")
DEFAULT_ROOT = REPO / "build" / "cluster"
DEFAULT_PYFILES = REPO / "build" / "pyfiles.zip"
HOST = "127.0.0.1"
STATE_FILE = "cluster.json"
LOG4J2 = """rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.master.name = org.apache.spark.deploy
logger.master.level = info
"""


class ClusterError(RuntimeError):
    """The cluster could not be started, reached or stopped."""


# ----------------------------------------------------------------------------- helpers
def spark_home() -> Path:
    """SPARK_HOME of the installed pyspark (its ``bin/spark-class`` and ``bin/spark-submit``)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def python_exe() -> str:
    """The interpreter of this project's virtualenv (the executors' and driver's Python)."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def isolated_env(env: dict) -> dict:
    """``env`` without any way to reach this project's virtualenv or checkout: no
    ``PYTHONPATH``, ``VIRTUAL_ENV``, ``PYSPARK_PYTHON``/``PYSPARK_DRIVER_PYTHON``, and ``PATH``
    without the venv's ``bin`` (what a worker node of a real cluster sees)."""
    env = dict(env)
    for k in ("PYTHONPATH", "VIRTUAL_ENV", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONHOME"):
        env.pop(k, None)
    bad = {str(venv_prefix() / "bin"), str(REPO / ".venv" / "bin"), str(Path(sys.prefix) / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and os.path.realpath(p) not in {os.path.realpath(b) for b in bad})
    return env


def spark_env(root: Path, isolate_python: bool = False) -> dict:
    """Environment for the daemons and spark-submit: pyspark's SPARK_HOME, the venv Python,
    loopback only, an empty conf dir (no stray spark-defaults), logs under ``root``.
    ``isolate_python`` (daemons only): :func:`isolated_env`, so executors can only run the
    Python that the job ships (``--archives``)."""
    env = dict(os.environ)
    conf_dir = root / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    log4j = conf_dir / "log4j2.properties"
    if not log4j.exists():  # warnings and errors only (Spark's default profile logs every task at INFO)
        log4j.write_text(LOG4J2)
    env.update({
        "SPARK_HOME": str(spark_home()),
        "SPARK_CONF_DIR": str(conf_dir),
        "SPARK_LOCAL_IP": HOST,
        "SPARK_LOCAL_HOSTNAME": "localhost",
        "SPARK_LOG_DIR": str(root / "logs"),
        "SPARK_PID_DIR": str(root),
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_DAEMON_MEMORY": env.get("SPARK_DAEMON_MEMORY", "384m"),
        "PYSPARK_PYTHON": python_exe(),
        "PYSPARK_DRIVER_PYTHON": python_exe(),
    })
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    return isolated_env(env) if isolate_python else env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _get_json(url: str, timeout: float = 3.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:  # loopback only
        return json.loads(r.read().decode())


# ----------------------------------------------------------------------------- cluster
@dataclass
class Cluster:
    """A running (or described) standalone cluster.

    Attributes:
        root: directory with ``cluster.json``, ``master/`` and ``worker-<i>/`` (log, pid, work/).
        port: master RPC port (``spark://127.0.0.1:<port>``).
        webui_port: master web UI port (its ``/json/`` endpoint is polled for readiness).
        workers: number of workers.
        worker_cores: cores offered by each worker.
        worker_memory: memory offered by each worker (Spark size string, e.g. ``1536m``).
        isolate_python: start the daemons with :func:`isolated_env` (no PYTHONPATH, no venv on
            PATH, no PYSPARK_PYTHON): executors then run only a shipped environment.
        pids: ``{"master": pid, "worker-1": pid, ...}`` of the daemon JVMs.
    """

    root: str
    port: int = 7077
    webui_port: int = 8080
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1536m"
    pids: dict = field(default_factory=dict)
    worker_ui_ports: dict = field(default_factory=dict)
    isolate_python: bool = False

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.port}"

    def worker_dir(self, i: int) -> Path:
        """Directory of worker ``i`` (1-based); executors run in ``<dir>/work/<app>/<exec>``."""
        return Path(self.root) / f"worker-{i}"

    def master_state(self) -> dict:
        """The master's JSON status (``workers``, ``activeapps``, ``completedapps``...)."""
        return _get_json(f"http://{HOST}:{self.webui_port}/json/")

    def alive_workers(self) -> int:
        try:
            return sum(1 for w in self.master_state().get("workers", []) if w.get("state") == "ALIVE")
        except OSError:
            return 0

    def save(self) -> None:
        Path(self.root, STATE_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, root: str | os.PathLike) -> "Cluster":
        p = Path(root, STATE_FILE)
        if not p.exists():
            raise ClusterError(f"no cluster state in {p}: run `make cluster-up` first")
        return cls(**json.loads(p.read_text()))

    # ---------------------------------------------------------------- start / stop
    def _spawn(self, name: str, args: list[str], env: dict) -> int:
        d = Path(self.root) / name
        d.mkdir(parents=True, exist_ok=True)
        log = open(d / f"{name}.log", "ab")
        proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(d), start_new_session=True)
        log.close()
        (d / f"{name}.pid").write_text(str(proc.pid))
        self.pids[name] = proc.pid
        return proc.pid

    def start(self, timeout: float = 120.0) -> "Cluster":
        """Start the master, then the workers; return when every worker is ALIVE.

        Raises:
            ClusterError: a daemon exited or the cluster was not ready within ``timeout`` s
                (the daemons started so far are stopped again; see their logs under ``root``).
        """
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        try:
            old = Cluster.load(root)
            if any(_alive(p) for p in old.pids.values()):
                raise ClusterError(f"a cluster is already running from {root} ({old.master_url}); "
                                   "`make cluster-down` first")
        except ClusterError as e:
            if "already running" in str(e):
                raise
        env = spark_env(root, self.isolate_python)
        self.pids = {}
        self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(self.port),
                               "--webui-port", str(self.webui_port)], env)
        self.save()
        t_end = time.time() + timeout
        try:
            self._wait(lambda: self.master_state().get("status") == "ALIVE", t_end, "master")
            for i in range(1, self.workers + 1):
                wd = self.worker_dir(i) / "work"
                wd.mkdir(parents=True, exist_ok=True)
                ui = free_port()
                self.worker_ui_ports[f"worker-{i}"] = ui
                self._spawn(f"worker-{i}", ["org.apache.spark.deploy.worker.Worker", "--host", HOST,
                                            "--cores", str(self.worker_cores), "--memory", self.worker_memory,
                                            "--work-dir", str(wd), "--webui-port", str(ui), self.master_url], env)
                self.save()
            self._wait(lambda: self.alive_workers() >= self.workers, t_end, f"{self.workers} workers")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, ready, t_end: float, what: str) -> None:
        while time.time() < t_end:
            dead = [n for n, p in self.pids.items() if not _alive(p)]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited while starting; see {self.root}/<name>/<name>.log")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise ClusterError(f"timed out waiting for {what} of {self.master_url}; logs under {self.root}")

    def executor_pids(self, worker: int | None = None) -> list[int]:
        """PIDs of executor JVMs (``CoarseGrainedExecutorBackend``) launched by this cluster's
        workers (all, or only worker ``worker``), found by their working directory."""
        import psutil

        dirs = [self.worker_dir(i) for i in ([worker] if worker else range(1, self.workers + 1))]
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmd = p.info["cmdline"] or []
                if not any("CoarseGrainedExecutorBackend" in c for c in cmd):
                    continue
                cwd = p.cwd()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if any(cwd.startswith(str(d) + os.sep) for d in dirs):
                found.append(p.info["pid"])
        return found

    def stop(self, grace: float = 15.0) -> None:
        """Stop workers, then the master (SIGTERM, SIGKILL after ``grace`` s), then any
        executor JVM of this cluster that outlived its worker."""
        order = [n for n in self.pids if n != "master"] + (["master"] if "master" in self.pids else [])
        leftovers = self.executor_pids() if Path(self.root).exists() else []
        for name in order:
            pid = self.pids[name]
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        t_end = time.time() + grace
        while time.time() < t_end and any(_alive(self.pids[n]) for n in order):
            time.sleep(0.2)
        for name in order:
            pid = self.pids[name]
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:  # reap if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        for pid in leftovers:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pids = {}
        if Path(self.root).exists():
            self.save()


# ----------------------------------------------------------------------------- py-files
def build_pyfiles(dest: str | os.PathLike = DEFAULT_PYFILES) -> str:
    """Zip the ``.py`` files of :data:`PYFILES_PACKAGES` (plus package data files such as
    ``.yaml``/``.json`` inside them) into ``dest`` with repository-relative names, written
    atomically, with fixed timestamps so the same sources give the same bytes.

    Returns:
        absolute path of the archive.
    """
    dest = Path(dest).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".zip.tmp")
    n = 0
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for pkg in PYFILES_PACKAGES:
            for path in sorted((REPO / pkg).rglob("*")):
                rel = path.relative_to(REPO)
                if (not path.is_file() or "__pycache__" in rel.parts
                        or path.suffix not in (".py", ".yaml", ".yml", ".json", ".txt")):
                    continue
                info = zipfile.ZipInfo(str(rel), date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                z.writestr(info, path.read_bytes())
                n += 1
    os.replace(tmp, dest)
    print(f"pyfiles: {dest} ({n} files from {', '.join(p + '/' for p in PYFILES_PACKAGES)})", file=sys.stderr)
    return str(dest)


# ----------------------------------------------------------------------------- shipped environment
#: Unpacked name of the environment archive in every executor's (and YARN/K8s driver's)
#: working directory: ``--archives env-<key>.tar.gz#env``.
ENV_ALIAS = "env"
DEFAULT_ENV_DIR = REPO / "build" / "env"
#: Files left out of the packed virtualenv (paths relative to the venv, fnmatch patterns):
#: pyspark (its 300 MB of jars; executors import pyspark from their own SPARK_HOME's
#: ``python/lib/pyspark.zip``), training-only and test-only packages (torch, transformers,
#: tensorboard, moto and its AWS libraries, pytest), and this project's editable install
#: (its code ships with ``--py-files``; the editable finder would point at the driver's checkout).
ENV_EXCLUDES = tuple(f"lib/python*/site-packages/{p}" for p in (
    "pyspark/*", "pyspark-*", "torch/*", "torch-*", "torchgen/*", "functorch/*", "nvidia/*", "triton/*",
    "transformers/*", "transformers-*", "tensorboard/*", "tensorboard-*", "tensorboard_data_server/*",
    "tensorboard_data_server-*", "moto/*", "moto-*", "cfnlint/*", "cfn_lint-*", "botocore/*", "botocore-*",
    "boto3/*", "boto3-*", "sympy/*", "sympy-*", "_pytest/*", "pytest/*", "pytest-*", "hypothesis/*",
    "hypothesis-*", "__editable__*", "polycorpus-*", "*/__pycache__/*",
))


def venv_prefix() -> Path:
    """The real directory of this project's virtualenv (``.venv`` may be a symlink)."""
    return (REPO / ".venv").resolve() if (REPO / ".venv").exists() else Path(sys.prefix).resolve()


def env_key(prefix: Path | None = None, excludes: tuple = ENV_EXCLUDES) -> str:
    """16 hex of sha256 over the Python version, the installed distributions (``name==version``,
    sorted) of the venv at ``prefix`` and the exclude patterns: the cache key of the archive."""
    import hashlib
    from importlib import metadata

    prefix = prefix or venv_prefix()
    site = list(prefix.glob("lib/python*/site-packages"))
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions(path=[str(x) for x in site])
                    if d.metadata["Name"]})
    doc = json.dumps({"python": os.path.basename(os.readlink(prefix / "bin" / "python3"))
                      if (prefix / "bin" / "python3").is_symlink() else sys.version,
                      "pyvenv": (prefix / "pyvenv.cfg").read_text() if (prefix / "pyvenv.cfg").exists() else "",
                      "dists": dists, "excludes": list(excludes)}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def pack_env(dest_dir: str | os.PathLike = DEFAULT_ENV_DIR, prefix: Path | None = None,
             excludes: tuple = ENV_EXCLUDES, compress_level: int = 1) -> str:
    """Pack the virtualenv with ``venv-pack`` into ``<dest_dir>/env-<key>.tar.gz`` (key:
    :func:`env_key`), reusing the archive when it exists (same packages, same excludes);
    written to a temporary name and renamed, so a killed pack leaves no half archive.

    The archive is relocatable except for the interpreter: ``bin/python`` stays a symlink to
    the base Python the venv was made from (``pyvenv.cfg``'s ``home``), which must exist at
    the same path on every node (same image), as venv-pack documents.

    Returns:
        absolute path of the archive.
    """
    import venv_pack

    prefix = prefix or venv_prefix()
    dest_dir = Path(dest_dir).resolve()
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"env-{env_key(prefix, excludes)}.tar.gz"
    if out.exists():
        print(f"env: reusing {out} ({out.stat().st_size >> 20} MiB)", file=sys.stderr)
        return str(out)
    t0 = time.time()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        venv_pack.pack(prefix=str(prefix), output=str(tmp), format="tar.gz", compress_level=compress_level,
                       filters=[("exclude", pat) for pat in excludes], force=True, verbose=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    for old in dest_dir.glob("env-*.tar.gz"):  # keep only the current environment's archive
        if old != out:
            old.unlink()
    print(f"env: packed {prefix} -> {out} ({out.stat().st_size >> 20} MiB) in {time.time() - t0:.0f}s",
          file=sys.stderr)
    return str(out)


# ----------------------------------------------------------------------------- submit
def model_files(config: dict, out: str) -> list[str]:
    """Model files the configured stages read on executors: the langid model and, when
    the quality stage is configured and its models exist, the quality models."""
    files = []
    if "langid" in config.get("stages", []):
        from filters.langid import default_model_path

        files.append((config.get("langid") or {}).get("model") or default_model_path())
    if "quality" in config.get("stages", []):
        from filters import quality as Q

        q = config.get("quality") or {}
        mdir = q.get("models_dir") or os.path.join(out, "models", "quality")
        try:
            langs, clf, _ = Q.model_paths(mdir, q.get("models") or {}, q.get("classifier"))
        except FileNotFoundError:
            langs, clf = {}, None
        for a, b in langs.values():
            files += [a, b]
        if clf:
            files.append(clf)
    seen, uniq = set(), []
    for f in files:
        f = os.path.abspath(f)
        if f not in seen and os.path.exists(f):
            seen.add(f)
            uniq.append(f)
    return uniq


class UsageError(ValueError):
    """A combination of options spark-submit would refuse (exit 2 from the CLI)."""


def check_deploy_mode(master: str, deploy_mode: str) -> None:
    """Refuse ``--deploy-mode cluster`` on a standalone master: Spark's ``SparkSubmit`` does not
    support cluster deploy mode for Python applications on standalone clusters ("Cluster deploy
    mode is currently not supported for python applications on standalone clusters.").

    A ``local[...]`` master is refused too: ``submit`` ships the environment to executors on other
    machines; a local build runs in-process with ``python -m jobs.build_corpus --master local[N]``
    (``make corpus`` without ``MASTER``).

    Raises:
        UsageError: a ``local`` master, cluster mode with a ``spark://`` master, or an unknown
            deploy mode.
    """
    if master == "local" or master.startswith("local["):
        raise UsageError(f"`submit` is for cluster masters (spark://, yarn, k8s://), got {master!r}: run a "
                         f"local build in-process with `python -m jobs.build_corpus --master {master}` "
                         "(or `make corpus` without MASTER)")
    if deploy_mode not in ("client", "cluster"):
        raise UsageError(f"--deploy-mode must be client or cluster, got {deploy_mode!r}")
    if deploy_mode == "cluster" and master.startswith("spark://"):
        raise UsageError("--deploy-mode cluster is not supported by Spark for Python applications on a "
                         "standalone master (spark://); use --deploy-mode client there, or YARN/Kubernetes "
                         "for a driver that runs inside the cluster (README: Run on a cluster)")


def submit_command(master: str, job: str, job_args: list[str], pyfiles: str, files: list[str],
                   conf: dict | None = None, name: str | None = None, env_archive: str | None = None,
                   deploy_mode: str = "client") -> list[str]:
    """The ``spark-submit`` command line for ``jobs/<job>.py``.

    Args:
        master: ``spark://host:port`` (or any master spark-submit accepts).
        job: job module name under ``jobs/`` (``langid``, ``build_corpus``, ``report``...).
        job_args: arguments of the job (``--out ... --config ...``).
        pyfiles: the archive from :func:`build_pyfiles`.
        files: model files for ``--files`` (executors find them with ``SparkFiles``).
        conf: extra ``--conf`` pairs; they override the defaults below.
        env_archive: the packed virtualenv (:func:`pack_env`), shipped with
            ``--archives <archive>#env`` and run by the executors as ``./env/bin/python``
            (Spark's documented way for Python package management); None: executors use this
            machine's venv interpreter path (only valid when every node has it).
        deploy_mode: ``client`` (driver here, on the venv's Python) or ``cluster`` (driver in
            the cluster on ``./env/bin/python``; YARN / Kubernetes only, see :func:`check_deploy_mode`).

    Raises:
        UsageError: see :func:`check_deploy_mode`.
    """
    check_deploy_mode(master, deploy_mode)
    py = python_exe()
    shipped = f"./{ENV_ALIAS}/bin/python"
    base = {
        "spark.pyspark.python": shipped if env_archive else py,
        "spark.pyspark.driver.python": shipped if env_archive and deploy_mode == "cluster" else py,
        "spark.driver.host": HOST,
        "spark.driver.bindAddress": HOST,
        "spark.executor.memory": "1g",
        "spark.executor.cores": "1",
        "spark.driver.memory": "2g",
        "spark.executorEnv.POLY_SHIP_STRICT": "1",
        "spark.ui.showConsoleProgress": "false",
        # a killed executor is replaced and its tasks retried (the default, said explicitly)
        "spark.task.maxFailures": "4",
    }
    base.update(conf or {})
    if deploy_mode == "cluster":
        for k in ("spark.driver.host", "spark.driver.bindAddress"):
            base.pop(k, None)
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", master, "--deploy-mode", deploy_mode,
           "--name", name or f"polycorpus-{job}", "--py-files", pyfiles]
    if env_archive:
        cmd += ["--archives", f"{env_archive}#{ENV_ALIAS}"]
    if files:
        cmd += ["--files", ",".join(files)]
    for k, v in base.items():
        cmd += ["--conf", f"{k}={v}"]
    # scripts/spark_job.py runs `jobs.<job>` as a module (see its docstring for why not jobs/<job>.py)
    return cmd + [str(REPO / "scripts" / "spark_job.py"), job, *job_args]


def stage_command(master: str, out: str, config: dict, job: str, conf: dict | None = None,
                  pyfiles: str | None = None, env_archive: str | None = None, force: bool = False) -> list[str]:
    """spark-submit command for one job (a stage name or ``report``) of the loaded ``config``
    (from :func:`pipeline.config.load_config`) writing under ``out``; ``force`` redoes a stage
    already published for the same input and config."""
    args = ["--out", out, "--config", config["_path"], "--data-root", config["data_root"], "--master", master]
    if force and job != "report":
        args.append("--force")
    files = model_files(config, out) if job != "report" else []
    return submit_command(master, job, args, pyfiles or build_pyfiles(), files, conf, env_archive=env_archive)


def submit_stages(master: str, out: str, config_path: str | None, data_root: str | None,
                  stages: list[str] | None = None, report: bool = True, conf: dict | None = None,
                  pyfiles: str | None = None, log=None, root: str | os.PathLike = DEFAULT_ROOT,
                  config: dict | None = None, ship_env: bool = True,
                  env_dir: str | os.PathLike = DEFAULT_ENV_DIR, force: bool | list[str] = False) -> None:
    """Run ``stages`` (default: the configured chain) one spark-submit each, then the report.

    Args:
        log: open file for the spark-submit output (default: this process's stdout/stderr).
        root: cluster directory whose ``conf/`` (log4j settings) spark-submit uses.
        ship_env: pack the virtualenv (:func:`pack_env`, cached in ``env_dir``) and run the
            executors from it; False: executors use the driver machine's venv path.
        force: True, or the stages to redo even when already published (fingerprint match).

    Raises:
        ValueError: a stage is not in the configured chain.
        subprocess.CalledProcessError: a spark-submit failed (its output says why).
    """
    from pipeline.config import load_config, write_resolved

    out = out if "://" in out else os.path.abspath(out)
    if config is None:
        config = load_config(config_path, data_root)
    else:
        # a config built from --input / --set / --sources: every spark-submit loads this very file
        path = write_resolved(config, Path(root).resolve() / "configs" / f"pipeline-{os.getpid()}.yaml")
        config = load_config(path, config["data_root"])
    chain = list(config["stages"])
    todo = stages or chain
    bad = [s for s in todo if s not in chain]
    if bad:
        raise ValueError(f"stages {bad} are not in the configured chain {chain}")
    pyfiles = pyfiles or build_pyfiles()
    archive = pack_env(env_dir) if ship_env else None
    env = spark_env(Path(root))
    for job in todo + (["report"] if report else []):
        redo = force is True or (isinstance(force, (list, tuple, set)) and job in force)
        cmd = stage_command(master, out, config, job, conf, pyfiles, archive, redo)  # quality models may appear mid-chain
        nfiles = cmd.count("--files")
        print(f"[cluster] {time.strftime('%H:%M:%S', time.gmtime())} spark-submit {job} on {master}"
              f"{' with --files ' + cmd[cmd.index('--files') + 1] if nfiles else ''}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT if log else None)


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import HelpFormatter

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a master and workers on 127.0.0.1")
    up.add_argument("--root", default=str(DEFAULT_ROOT), help="logs, pid files and worker dirs")
    up.add_argument("--port", type=int, default=7077, help="master RPC port")
    up.add_argument("--webui-port", type=int, default=8080, help="master web UI port")
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--worker-cores", type=int, default=1)
    up.add_argument("--worker-memory", default="1536m", help="memory each worker offers to executors")
    up.add_argument("--isolate-python", action="store_true",
                    help="start the daemons without PYTHONPATH / the venv on PATH (executors need --archives)")
    down = sub.add_parser("down", help="stop the cluster started from --root")
    down.add_argument("--root", default=str(DEFAULT_ROOT))
    st = sub.add_parser("status", help="print workers and applications")
    st.add_argument("--root", default=str(DEFAULT_ROOT))
    pf = sub.add_parser("pyfiles", help="build the --py-files archive")
    pf.add_argument("--dest", default=str(DEFAULT_PYFILES))
    sb = sub.add_parser("submit", help="spark-submit the configured stages (then the report)")
    sb.add_argument("--master", required=True, help="e.g. spark://127.0.0.1:7077")
    sb.add_argument("--out", default="build/sample")
    sb.add_argument("--config", default=None)
    sb.add_argument("--data-root", default=None)
    sb.add_argument("--stages", default=None, help="comma-separated subset (default: the configured chain)")
    sb.add_argument("--no-report", action="store_true")
    sb.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark conf")
    # your own files and overrides, as `python -m jobs.build_corpus` takes them (pipeline.cli)
    sb.add_argument("--input", action="append", default=[], metavar="GLOB")
    sb.add_argument("--format", default=None)
    sb.add_argument("--tier", default="web")
    sb.add_argument("--lang", default=None)
    sb.add_argument("--field", action="append", default=[], metavar="NAME=COLUMN")
    sb.add_argument("--sources", action="append", default=[], metavar="FILE")
    sb.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    sb.add_argument("--no-ship-env", action="store_true",
                    help="do not pack the virtualenv: executors use this machine's venv path (shared disk only)")
    sb.add_argument("--env-dir", default=str(DEFAULT_ENV_DIR), help="cache of the packed virtualenv archive")
    sb.add_argument("--force", action="store_true", help="redo stages already published for the same input and config")
    sb.add_argument("--from-stage", default=None, help="run the chain from this stage on, redoing it and the later ones")
    sb.add_argument("--deploy-mode", default="client", choices=["client", "cluster"],
                    help="cluster: YARN / Kubernetes only (Spark refuses it for Python apps on spark://)")
    pk = sub.add_parser("pack-env", help="pack the virtualenv for --archives (cached by installed packages)")
    pk.add_argument("--env-dir", default=str(DEFAULT_ENV_DIR))
    a = p.parse_args(argv)
    if a.cmd == "up":
        c = Cluster(root=str(Path(a.root).resolve()), port=a.port, webui_port=a.webui_port, workers=a.workers,
                    worker_cores=a.worker_cores, worker_memory=a.worker_memory,
                    isolate_python=a.isolate_python).start()
        print(f"cluster up: {c.master_url} (web UI http://{HOST}:{c.webui_port}), {c.workers} workers x "
              f"{c.worker_cores} core(s) / {c.worker_memory}; logs and pids under {c.root}")
    elif a.cmd == "down":
        try:
            c = Cluster.load(Path(a.root).resolve())
        except ClusterError as e:
            print(f"cluster down: {e}")
            return 0
        c.stop()
        print(f"cluster down: {c.master_url} stopped")
    elif a.cmd == "status":
        c = Cluster.load(Path(a.root).resolve())
        s = c.master_state()
        print(json.dumps({"master": c.master_url, "status": s.get("status"),
                          "workers": [{k: w.get(k) for k in ("id", "state", "cores", "memory", "coresused")}
                                      for w in s.get("workers", [])],
                          "activeapps": [x.get("name") for x in s.get("activeapps", [])]}, indent=1))
    elif a.cmd == "pyfiles":
        print(build_pyfiles(a.dest))
    elif a.cmd == "pack-env":
        print(pack_env(a.env_dir))
    elif a.cmd == "submit":
        from pipeline.config import ConfigError, load_config
        from pipeline.session import parse_conf

        from pipeline.cli import config_from_args
        from pipeline.config import fail

        try:
            check_deploy_mode(a.master, a.deploy_mode)
            if a.deploy_mode == "cluster":
                raise UsageError("`submit` runs one client-mode spark-submit per stage; for --deploy-mode "
                                 "cluster on YARN / Kubernetes use the spark-submit lines of the README "
                                 "(Run on a cluster)")
            stages = [s.strip() for s in a.stages.split(",") if s.strip()] if a.stages else None
            config = config_from_args(a) if (a.input or a.sources or a.overrides) else None
            force: bool | list[str] = a.force
            if a.from_stage:
                chain = list((config or load_config(a.config, a.data_root))["stages"])
                if a.from_stage not in chain:
                    raise UsageError(f"--from-stage {a.from_stage} is not in the configured chain {chain}")
                stages = chain[chain.index(a.from_stage):]
                force = True
            conf = parse_conf(a.conf)
        except ConfigError as e:
            return fail(str(e))
        except (UsageError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        submit_stages(a.master, a.out, a.config, a.data_root, stages, report=not a.no_report,
                      conf=conf, config=config, ship_env=not a.no_ship_env, env_dir=a.env_dir, force=force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
