"""Uploading an export folder to the Hugging Face Hub and recording the release in the manifest."""
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

try:  # the HTTP client of huggingface_hub (httpx2 from version 2, httpx before)
    from httpx2 import HTTPError as ClientError
except ImportError:  # pragma: no cover
    from httpx import HTTPError as ClientError

from ..checkpoint import file_sha256
from ..errors import UserError, error_reason
from ..manifest import Release, active_manifest_path, load_manifest, write_release
from .export import HUB_FILES, WEIGHTS_FILE, check_repo_id, read_exported_release

__all__ = ['PublishResult', 'check_export_folder', 'publish_folder', 'record_embedded', 'release_json']

PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.pkl', '.pickle', '.ckpt', '.tar')


@dataclass(frozen=True)
class PublishResult:
    """The release a publish created, and the manifest file it went to (None: it could not be updated, which
    ``problem`` says; the caller prints the entry instead)."""
    release: Release
    manifest: Optional[Path]
    problem: Optional[str] = None


def check_export_folder(folder: Union[str, Path], repo_id: Optional[str]) -> Release:
    """The manifest entry ``folder`` would become once uploaded (revision still unknown); refuses bad folders.

    ``repo_id`` None checks the folder for embedding in the package instead of uploading.
    """
    folder = Path(folder)
    if repo_id is not None:
        check_repo_id(repo_id)
    if not folder.is_dir():
        raise UserError(f'{str(folder)!r} is not a folder; create one with `srm-zoo export`.')
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UserError(f'{str(folder)!r} holds pickle files ({", ".join(pickles)}); the zoo publishes weights only '
                        'as safetensors. Remove them (the export wrote model.safetensors).')
    exported = read_exported_release(folder)
    if repo_id is not None and exported.repo_id != repo_id:
        raise UserError(f'{str(folder)!r} was exported for {exported.repo_id} (its model card says so), not '
                        f'{repo_id}; export again with --repo-id {repo_id}.')
    sha256 = file_sha256(folder / WEIGHTS_FILE)
    if sha256 != exported.sha256:
        raise UserError(f'{folder / WEIGHTS_FILE} changed after the export (sha256 {sha256}, exported '
                        f'{exported.sha256}); export the folder again.')
    return Release(model=exported.model, tag=exported.tag, sha256=sha256, metrics=exported.metrics,
                   provenance=exported.provenance, hf_hub_id=repo_id, filename=WEIGHTS_FILE)


def publish_folder(
        folder: Union[str, Path],
        repo_id: str,
        manifest: Optional[Union[str, Path]] = None,
        token: Optional[str] = None,
        private: bool = False,
        commit_message: Optional[str] = None,
) -> PublishResult:
    """Upload an export folder (its Hub files only) and record the resulting commit in the manifest.

    The token comes from ``token``, ``HF_TOKEN`` or the stored ``hf auth login``. A broken manifest is refused
    before anything is uploaded; when the manifest cannot be updated after the upload the result's ``manifest``
    is None and the caller prints the entry.
    """
    folder = Path(folder)
    release = check_export_folder(folder, repo_id)
    load_manifest(manifest)  # a broken manifest is refused before anything is uploaded
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, repo_type='model', folder_path=str(folder), allow_patterns=list(HUB_FILES),
            commit_message=commit_message or f'Add {release.name} weights (srm-zoo export)')
    except HfHubHTTPError as error:
        reason = error_reason(error)
        raise UserError(f'Uploading {str(folder)!r} to {repo_id} failed: {reason}. Log in with `hf auth login` '
                        'or set HF_TOKEN to a token with write access.') from None
    except OfflineModeIsEnabled:
        raise UserError(f'Cannot upload {str(folder)!r} to {repo_id}: the Hugging Face Hub is in offline mode '
                        '(HF_HUB_OFFLINE=1); publish with the network on.') from None
    except (ClientError, OSError) as error:  # no network, refused connection, timeout, ...
        raise UserError(f'Cannot reach the Hugging Face Hub at {constants.ENDPOINT} to upload {str(folder)!r} '
                        f'({type(error).__name__}: {error_reason(error)}). Check the network, or HF_ENDPOINT.') \
            from None
    release = replace(release, revision=commit.oid)
    path = Path(manifest).resolve() if manifest else active_manifest_path()
    try:
        return PublishResult(release=release, manifest=write_release(release, path))
    except OSError as error:
        problem = f'The manifest {path} is not writable ({error.strerror or error_reason(error)}).'
    except UserError as error:  # the manifest broke during the upload
        problem = str(error)
    return PublishResult(release=release, manifest=None, problem=problem)


def record_embedded(folder: Union[str, Path], manifest: Optional[Union[str, Path]] = None) -> Release:
    """Record an export folder that lies next to the manifest (in the package) as an embedded release."""
    folder = Path(folder).resolve()
    manifest_path = Path(manifest).resolve() if manifest else active_manifest_path()
    if folder.parent != manifest_path.parent:
        raise UserError(f'Embedded weights must be a folder next to the manifest ({manifest_path.parent}); '
                        f'{folder} is not. Export into {manifest_path.parent / "<model>.<tag>"}.')
    release = replace(check_export_folder(folder, None), hf_hub_id=None, embedded=folder.name,
                      root=manifest_path.parent)
    write_release(release, manifest_path)
    return release


def release_json(release: Release) -> str:
    """A manifest entry as JSON, for pasting into ``srm_zoo/weights/manifest.json``."""
    return json.dumps(release.to_dict(), indent=2)
