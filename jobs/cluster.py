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
* ``submit``  run the configured stages (or ``--stages``) one ``spark-submit`` each, then the
              report, against ``--master``: code ships with ``--py-files``, model files
              (``lid.176.ftz``, the quality models when present) with ``--files``, and the
              executors are told (``POLY_SHIP_STRICT=1``) to refuse any model path that did not
              arrive through ``SparkFiles``. ``make corpus MASTER=spark://127.0.0.1:7077``.

Raw inputs (``--data-root``) and the output root (``--out``) must be on storage every node can
read (here: the same machine); everything else reaches the executors through Spark.
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


def spark_env(root: Path) -> dict:
    """Environment for the daemons and spark-submit: pyspark's SPARK_HOME, the venv Python,
    loopback only, an empty conf dir (no stray spark-defaults), logs under ``root``."""
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
    return env


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
        env = spark_env(root)
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


def submit_command(master: str, job: str, job_args: list[str], pyfiles: str, files: list[str],
                   conf: dict | None = None, name: str | None = None) -> list[str]:
    """The ``spark-submit`` command line for ``jobs/<job>.py`` (client deploy mode).

    Args:
        master: ``spark://host:port`` (or any master spark-submit accepts).
        job: job module name under ``jobs/`` (``langid``, ``build_corpus``, ``report``...).
        job_args: arguments of the job (``--out ... --config ...``).
        pyfiles: the archive from :func:`build_pyfiles`.
        files: model files for ``--files`` (executors find them with ``SparkFiles``).
        conf: extra ``--conf`` pairs; they override the defaults below.
    """
    py = python_exe()
    base = {
        "spark.pyspark.python": py,
        "spark.pyspark.driver.python": py,
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
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", master, "--deploy-mode", "client",
           "--name", name or f"polycorpus-{job}", "--py-files", pyfiles]
    if files:
        cmd += ["--files", ",".join(files)]
    for k, v in base.items():
        cmd += ["--conf", f"{k}={v}"]
    # scripts/spark_job.py runs `jobs.<job>` as a module (see its docstring for why not jobs/<job>.py)
    return cmd + [str(REPO / "scripts" / "spark_job.py"), job, *job_args]


def stage_command(master: str, out: str, config: dict, job: str, conf: dict | None = None,
                  pyfiles: str | None = None) -> list[str]:
    """spark-submit command for one job (a stage name or ``report``) of the loaded ``config``
    (from :func:`pipeline.config.load_config`) writing under ``out``."""
    args = ["--out", out, "--config", config["_path"], "--data-root", config["data_root"], "--master", master]
    files = model_files(config, out) if job != "report" else []
    return submit_command(master, job, args, pyfiles or build_pyfiles(), files, conf)


def submit_stages(master: str, out: str, config_path: str | None, data_root: str | None,
                  stages: list[str] | None = None, report: bool = True, conf: dict | None = None,
                  pyfiles: str | None = None, log=None, root: str | os.PathLike = DEFAULT_ROOT,
                  config: dict | None = None) -> None:
    """Run ``stages`` (default: the configured chain) one spark-submit each, then the report.

    Args:
        log: open file for the spark-submit output (default: this process's stdout/stderr).
        root: cluster directory whose ``conf/`` (log4j settings) spark-submit uses.

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
    env = spark_env(Path(root))
    for job in todo + (["report"] if report else []):
        cmd = stage_command(master, out, config, job, conf, pyfiles)  # quality models may appear mid-chain
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
    a = p.parse_args(argv)
    if a.cmd == "up":
        c = Cluster(root=str(Path(a.root).resolve()), port=a.port, webui_port=a.webui_port, workers=a.workers,
                    worker_cores=a.worker_cores, worker_memory=a.worker_memory).start()
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
    elif a.cmd == "submit":
        from pipeline.session import parse_conf

        from pipeline.cli import config_from_args
        from pipeline.config import ConfigError, fail

        stages = [s.strip() for s in a.stages.split(",") if s.strip()] if a.stages else None
        try:
            config = config_from_args(a) if (a.input or a.sources or a.overrides) else None
            submit_stages(a.master, a.out, a.config, a.data_root, stages, report=not a.no_report,
                          conf=parse_conf(a.conf), config=config)
        except ConfigError as e:
            return fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
