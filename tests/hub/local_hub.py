"""A real Hugging Face Hub endpoint on loopback: olah in offline mode serving local git repositories."""
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

PROBE_REPO = 'probe/ready'


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return its stripped output."""
    env = dict(os.environ, GIT_AUTHOR_NAME='srm-zoo', GIT_AUTHOR_EMAIL='srm-zoo@localhost',
               GIT_COMMITTER_NAME='srm-zoo', GIT_COMMITTER_EMAIL='srm-zoo@localhost')
    return subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


class LocalHub:
    """olah serving every git work tree under ``<root>/mirrors/models/<org>/<name>``."""

    def __init__(self, root: Path, endpoint: str) -> None:
        self.root = root
        self.endpoint = endpoint
        self.port = int(endpoint.rsplit(':', 1)[1])
        self.mirrors = root / 'mirrors'
        self.process: Optional[subprocess.Popen] = None

    def repo_dir(self, repo_id: str) -> Path:
        return self.mirrors / 'models' / repo_id

    def commit(self, repo_id: str, message: str = 'update') -> str:
        """Commit everything in the repository's work tree (creating the repository); returns the commit sha."""
        repo = self.repo_dir(repo_id)
        repo.mkdir(parents=True, exist_ok=True)
        if not (repo / '.git').exists():
            git(repo, 'init', '-q', '-b', 'main')
        git(repo, 'add', '-A')
        git(repo, 'commit', '-q', '--allow-empty', '-m', message)
        return git(repo, 'rev-parse', 'HEAD')

    def start(self, timeout: float = 30.0) -> 'LocalHub':
        netloc = f'127.0.0.1:{self.port}'
        config = self.root / 'olah.toml'
        config.write_text('\n'.join([
            '[basic]', 'host = "127.0.0.1"', f'port = {self.port}', f'repos-path = "{self.root / "olah-repos"}"',
            f'mirror-netloc = "{netloc}"', f'mirror-lfs-netloc = "{netloc}"', f'mirrors-path = ["{self.mirrors}"]',
            'hf-scheme = "http"', 'hf-netloc = "127.0.0.1:9"', 'hf-lfs-netloc = "127.0.0.1:9"',
            '[accessibility]', 'offline = true', '']))
        (self.repo_dir(PROBE_REPO)).mkdir(parents=True, exist_ok=True)
        (self.repo_dir(PROBE_REPO) / 'README.md').write_text('probe\n')
        self.commit(PROBE_REPO)
        logs = self.root / 'logs'
        logs.mkdir(exist_ok=True)
        olah = Path(sys.executable).with_name('olah-cli')
        command = [str(olah)] if olah.exists() else ['olah-cli']
        with (logs / 'stdout.txt').open('w') as out:
            self.process = subprocess.Popen(command + ['-c', str(config), '--log-path', str(logs)],
                                            stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f'olah exited: {(logs / "stdout.txt").read_text()[-2000:]}')
            try:
                with urllib.request.urlopen(f'{self.endpoint}/api/models/{PROBE_REPO}/revision/main', timeout=2):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f'olah did not answer within {timeout} s')

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
