"""model_cards/: one generated card per catalogue tag, kept up to date, with valid front matter."""
from pathlib import Path

import pytest

from srm_zoo.catalogue import CATALOGUE
from srm_zoo.cli import main
from srm_zoo.cli import cards as cards_cli
from srm_zoo.hub import cards as cards_module
from srm_zoo.hub.cards import catalogue_cards, split_front_matter, stale_cards, write_model_cards
from srm_zoo.hub.zoo_table import TABLE_END, TABLE_START, readme_table_is_stale, zoo_table

CARDS_DIR = Path(__file__).resolve().parents[2] / 'model_cards'
README = CARDS_DIR.parent / 'README.md'


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
    monkeypatch.chdir(tmp_path)  # no README.md here: only the cards
    (tmp_path / 'README.md').write_text('not a card')
    removed = generated['srm_resnet18.official_in1k.md'].replace('srm_resnet18.official_in1k', 'srm_resnet7.old')
    (tmp_path / 'srm_resnet7.old.md').write_text(removed)  # the card of a model the catalogue no longer has
    (tmp_path / 'srm_notes.md').write_text('# my notes on SRM\n')  # not a card: left alone
    assert main(['cards', '--check', '--out', str(tmp_path)]) == 1
    assert main(['cards', '--out', str(tmp_path)]) == 0
    assert stale_cards(tmp_path, generated) == [] and (tmp_path / 'README.md').exists()
    assert not (tmp_path / 'srm_resnet7.old.md').exists() and (tmp_path / 'srm_notes.md').exists()
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


@pytest.fixture(scope='module')
def table():
    return zoo_table()


def test_readme_zoo_table_is_up_to_date(table):
    assert not readme_table_is_stale(README, table), 'the README\'s zoo table is out of date: run `srm-zoo cards`'


def test_zoo_table_follows_the_catalogue_and_the_manifest(table):
    rows = {line.split(' | ')[0][2:].strip('`'): line.split(' | ')[1:] for line in table.splitlines()[2:]}
    assert list(rows) == list(CATALOGUE)
    r50 = rows['srm_resnet50']
    # SRM adds cfc (C x 2) and a BatchNorm's weight and bias to each block of 256, 512, 1024, 2048 channels
    assert r50[:4] == ['timm `resnet50`', '25,617,448', f'{4 * (3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048):,}',
                       '4.09 at 224 px']
    assert r50[5:] == ['none yet', '77.13 ImageNet-1k (Lee et al., ICCV 2019) |']
    digits = rows['srm_resnet20_cifar']
    assert digits[4] == '`cifar10`, `sklearn_digits`'
    assert digits[5] == ('`sklearn_digits`: embedded in the package, top-1 99.17 on the 360 test images of '
                         'sklearn-digits')


def test_cards_command_writes_and_checks_the_readme_table(generated, table, tmp_path, monkeypatch, capsys):
    """The table goes between the README's markers, the rest of the README untouched; `--check` reports a stale
    table; a README without markers is left alone, unless named with --readme (then refused)."""
    monkeypatch.setattr(cards_module, 'catalogue_cards', lambda: generated)
    monkeypatch.setattr(cards_cli, 'zoo_table', lambda: table)
    monkeypatch.chdir(tmp_path)
    assert main(['cards']) == 0  # no README.md: cards only
    readme = tmp_path / 'README.md'
    readme.write_text('# My project\n')
    assert main(['cards', '--check']) == 0 and readme.read_text() == '# My project\n'
    assert main(['cards', '--readme', 'README.md']) == 2
    assert 'no zoo table markers' in capsys.readouterr().err and readme.read_text() == '# My project\n'
    readme.write_text(f'# zoo\n\n{TABLE_START}\n| stale |\n{TABLE_END}\n\nafter\n')
    assert main(['cards', '--check']) == 1
    assert 'the zoo table of README.md' in capsys.readouterr().out
    assert main(['cards']) == 0
    assert readme.read_text() == f'# zoo\n\n{TABLE_START}\n{table}\n{TABLE_END}\n\nafter\n'
    assert main(['cards', '--check']) == 0
