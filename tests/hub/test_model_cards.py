"""model_cards/: one generated card per catalogue tag, kept up to date, with valid front matter."""
from pathlib import Path

import pytest

from srm_zoo.catalogue import CATALOGUE
from srm_zoo.cli import main
from srm_zoo.hub import cards as cards_module
from srm_zoo.hub.cards import catalogue_cards, split_front_matter, stale_cards, write_model_cards

CARDS_DIR = Path(__file__).resolve().parents[2] / 'model_cards'


@pytest.fixture(scope='module')
def generated():
    return catalogue_cards()


def test_model_cards_are_up_to_date(generated):
    stale = stale_cards(CARDS_DIR, generated)
    assert stale == [], f'model_cards/ is out of date ({", ".join(stale)}): run `python -m srm_zoo cards`'


def test_every_catalogue_tag_has_a_card_with_valid_front_matter(generated):
    assert set(generated) == {f'{e.name}.{t.tag}.md' for e in CATALOGUE.values() for t in e.tags}
    for name, card in generated.items():
        meta, body = split_front_matter(card)
        assert meta['library_name'] == 'timm' and 'srm' in meta['tags'], name
        assert body.startswith(f'# Model card for {name[:-3]}\n')
    r50 = generated['srm_resnet50.official_in1k.md']
    assert 'Params (M): 25.617' in r50 and 'GMACs: 4.089' in r50
    assert '| reported: Lee et al., ICCV 2019 | ImageNet-1k | validation | 77.13 | 93.51 |' in r50
    assert 'No weights are published for `srm_resnet50.official_in1k` yet' in r50
    assert '`srm-zoo publish DIR --repo-id srm-zoo/srm_resnet50.official_in1k`' in r50


def test_cards_command_regenerates_and_checks(generated, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cards_module, 'catalogue_cards', lambda: generated)
    (tmp_path / 'README.md').write_text('not a card')
    (tmp_path / 'srm_resnet7.old.md').write_text('a card of a removed model')
    assert main(['cards', '--check', '--out', str(tmp_path)]) == 1
    assert main(['cards', '--out', str(tmp_path)]) == 0
    assert stale_cards(tmp_path, generated) == [] and (tmp_path / 'README.md').exists()
    assert not (tmp_path / 'srm_resnet7.old.md').exists()
    card = tmp_path / 'srm_resnet18.official_in1k.md'
    card.write_text(card.read_text().replace('GMACs', 'GFLOPs'))
    assert main(['cards', '--check', '--out', str(tmp_path)]) == 1
    assert 'srm_resnet18.official_in1k.md' in capsys.readouterr().out
    assert write_model_cards(tmp_path) == ['srm_resnet18.official_in1k.md']
    assert main(['cards', '--check', '--out', str(tmp_path)]) == 0


def test_cards_command_refuses_an_out_that_is_no_folder(tmp_path, capsys):
    """--out naming a file (or a path under one) is a one-line error, and nothing is written; --check of a
    missing folder says that the folder is missing."""
    not_a_folder = tmp_path / 'cards.md'
    not_a_folder.write_text('a file')
    for out in (not_a_folder, not_a_folder / 'cards'):
        assert main(['cards', '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('srm-zoo cards: error: --out') and len(err.strip().splitlines()) == 1
    assert not_a_folder.read_text() == 'a file'
    assert main(['cards', '--check', '--out', str(tmp_path / 'missing')]) == 1
    assert 'the folder does not exist' in capsys.readouterr().out and not (tmp_path / 'missing').exists()
