"""``srm-zoo publish DIR --repo-id ORG/NAME``: upload an export folder and record the release.

Uploads the folder written by `srm-zoo export` with huggingface_hub (token from `hf auth login`
or HF_TOKEN), then writes the manifest entry (repository, pinned commit, sha256, metrics,
provenance); a broken manifest is refused before the upload, and when the manifest cannot be
updated after it, prints the entry to add by hand. With --embedded, records a folder that lies
next to the manifest (srm_zoo/weights/<model>.<tag>) as weights shipped inside the package
instead of uploading it.
"""
import argparse

from ..errors import UserError
from ..hub.publish import PublishResult, publish_folder, record_embedded, release_json
from ..manifest import active_manifest_path


def run(args: argparse.Namespace) -> int:
    if args.embedded:
        release = record_embedded(args.folder, manifest=args.manifest)
        print(f'Recorded {release.name} as embedded weights ({release.location}) in '
              f'{args.manifest or active_manifest_path()}; regenerate the model cards and the README\'s zoo table '
              'with `srm-zoo cards`.')
        return 0
    if not args.repo_id:
        raise UserError('--repo-id ORG/NAME is required (or --embedded for weights shipped in the package).')
    result = publish_folder(args.folder, args.repo_id, manifest=args.manifest, token=args.token,
                            private=args.private, commit_message=args.message)
    report_published(result)
    if result.manifest:
        print('Regenerate the model cards and the README\'s zoo table with `srm-zoo cards`.')
    return 0


def report_published(result: PublishResult) -> None:
    """Print where a release went and where it is recorded, or why the manifest was not updated and the entry
    to add by hand."""
    release = result.release
    print(f'Published {release.name} to {release.hf_hub_id} at revision {release.revision}.')
    if result.manifest:
        print(f'Recorded the release in {result.manifest}.')
    else:
        print(f'{result.problem} Record the release by adding this entry to the "releases" list of the manifest:')
        print(release_json(release))


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser('publish', help='upload an export folder to the Hub and record it in the manifest',
                                   description=__doc__.split(':', 1)[1].strip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', help='folder written by `srm-zoo export`')
    parser.add_argument('--repo-id', default=None, help='Hub repository, ORG/NAME (created if needed)')
    parser.add_argument('--embedded', action='store_true',
                        help='record a folder next to the manifest as embedded weights; no upload')
    parser.add_argument('--manifest', default=None,
                        help='manifest file to record the release in (default: the active manifest, '
                             'SRM_ZOO_MANIFEST or the package\'s)')
    parser.add_argument('--token', default=None, help='Hub token (default: HF_TOKEN or the stored login)')
    parser.add_argument('--private', action='store_true', help='create the repository as private')
    parser.add_argument('--message', default=None, help='commit message')
    parser.set_defaults(run=run)
