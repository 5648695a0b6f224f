"""The packaged agencies and theme tree, and the validation of reference-data files."""

from __future__ import annotations

import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bi_platform.news import reference_data
from bi_platform.news.reference_data import (
    AGENCY_TYPES,
    Agency,
    ReferenceDataError,
    Theme,
    load_agencies,
    load_themes,
    theme_path,
)

AGENCY = """\
    {key}:
      name: {name}
      type: {type}
      parent: {parent}
      url: {url}
"""


def agencies_yaml(tmp_path: Path, body: str, name: str = "agencies.yaml") -> Path:
    path = tmp_path / name
    path.write_text("sources:\n" + textwrap.indent(textwrap.dedent(body), "  "), encoding="utf-8")
    return path


def agency(
    key: str,
    *,
    name: str = "Ministério de Teste",
    type: str = "ministerio",
    parent: str = "null",
    url: str | None = None,
) -> str:
    url = url if url is not None else f"https://www.gov.br/{key}/pt-br/assuntos/noticias"
    return textwrap.dedent(AGENCY).format(key=key, name=name, type=type, parent=parent, url=url)


def themes_yaml(tmp_path: Path, body: str, name: str = "themes.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def expect_error(path: Path, *fragments: str, loader=load_agencies) -> str:
    with pytest.raises(ReferenceDataError) as info:
        loader(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------------------
# The packaged files
# --------------------------------------------------------------------------------------
def test_packaged_agencies_load_and_are_many_real_bodies() -> None:
    agencies = load_agencies()
    assert len(agencies) >= 150
    assert all(isinstance(a, Agency) and a.key == k for k, a in agencies.items())
    for key in (
        "mec", "saude", "fazenda", "mma", "anatel", "anvisa", "ibge", "inss", "ibama", "icmbio",
        "capes", "cnpq", "inep", "fnde", "funai", "incra", "embrapa", "fiocruz", "ipea", "pf",
        "prf", "planalto", "secom", "agu", "cgu", "mre", "defesa", "mj", "mds", "mdic", "mapa",
        "mcti", "mme", "mcom", "cidades", "turismo", "esporte", "cultura", "mulheres",
        "igualdaderacial", "povosindigenas", "mdh", "trabalho", "previdencia", "gestao",
        "planejamento", "portos", "transportes", "mda", "memp", "anac", "antt", "antaq", "aneel",
        "anp", "ana", "ans", "ancine", "anm",
    ):  # fmt: skip
        assert key in agencies, key
    assert agencies["mec"].url == "https://www.gov.br/mec/pt-br/assuntos/noticias"
    assert agencies["mapa"].url.startswith("https://www.gov.br/agricultura/")
    assert agencies["portos"].url.startswith("https://www.gov.br/portos-e-aeroportos/")
    types = {a.type for a in agencies.values()}
    assert types <= AGENCY_TYPES
    assert {"ministerio", "agencia_reguladora", "universidade", "instituto_federal"} <= types
    assert sum(a.type == "universidade" for a in agencies.values()) >= 50


def test_packaged_agency_urls_and_parents() -> None:
    agencies = load_agencies()
    gov_br = 0
    for agency in agencies.values():
        parts = urlsplit(agency.url)
        assert agency.url.startswith("https://"), agency
        assert parts.hostname and parts.hostname.endswith(".br"), agency
        assert parts.hostname.count(".") >= 2, agency
        gov_br += parts.hostname == "www.gov.br"
        # every chain of parents ends at a root within a few steps
        seen, key = set(), agency.key
        while key is not None:
            assert key not in seen
            seen.add(key)
            key = agencies[key].parent
    assert gov_br / len(agencies) > 0.4
    assert len({a.url for a in agencies.values()}) == len(agencies)
    assert agencies["anvisa"].parent == "saude"
    assert agencies["ufrj"].parent == "mec"


def test_packaged_theme_tree_counts_and_shape() -> None:
    themes = load_themes()
    by_level = {level: [t for t in themes.values() if t.level == level] for level in (1, 2, 3)}
    assert len(by_level[1]) >= 20
    assert len(by_level[2]) >= 60
    assert len(by_level[3]) >= 150
    assert len(themes) == sum(len(v) for v in by_level.values())
    for theme in themes.values():
        assert isinstance(theme, Theme)
        assert theme.code.count(".") + 1 == theme.level
        if theme.level == 1:
            assert theme.parent_code is None
        else:
            assert theme.parent_code in themes
            assert theme.code.startswith(theme.parent_code + ".")
            assert themes[theme.parent_code].level == theme.level - 1
    labels = {t.label for t in by_level[1]}
    assert {"Economia e Finanças", "Saúde", "Educação", "Segurança Pública"} <= labels
    assert all(any(t.parent_code == l1.code for t in by_level[2]) for l1 in by_level[1])


def test_theme_path() -> None:
    themes = load_themes()
    leaf = next(t for t in themes.values() if t.level == 3)
    l1, l2, l3 = theme_path(leaf.code)
    assert (l1.level, l2.level, l3) == (1, 2, leaf)
    assert l2.code == leaf.parent_code and l1.code == l2.parent_code
    mid = themes[leaf.parent_code]
    assert theme_path(mid.code) == (l1, mid, None)
    assert theme_path(l1.code) == (l1, None, None)
    assert theme_path(leaf.code, themes) == (l1, l2, l3)
    with pytest.raises(KeyError, match=r"99\.99"):
        theme_path("99.99")


def test_default_loads_are_copies() -> None:
    agencies = load_agencies()
    agencies.pop("mec")
    assert "mec" in load_agencies()


# --------------------------------------------------------------------------------------
# Validation of agencies files
# --------------------------------------------------------------------------------------
def test_small_valid_agencies_file(tmp_path: Path) -> None:
    path = agencies_yaml(
        tmp_path, agency("saude") + agency("anvisa", type="agencia_reguladora", parent="saude")
    )
    agencies = load_agencies(path)
    assert list(agencies) == ["saude", "anvisa"]
    assert agencies["anvisa"] == Agency(
        "anvisa",
        "Ministério de Teste",
        "agencia_reguladora",
        "saude",
        "https://www.gov.br/anvisa/pt-br/assuntos/noticias",
    )
    assert load_agencies(str(path)) == agencies


def test_unknown_parent(tmp_path: Path) -> None:
    path = agencies_yaml(tmp_path, agency("anvisa", parent="ministerio_fantasma"))
    expect_error(path, "'anvisa'", "unknown parent", "'ministerio_fantasma'")


def test_duplicate_agency_key_is_detected(tmp_path: Path) -> None:
    path = agencies_yaml(tmp_path, agency("mec") + agency("saude") + agency("mec"))
    expect_error(path, "duplicate key", "'mec'", "line ")


def test_duplicate_field_inside_an_agency(tmp_path: Path) -> None:
    body = agency("mec").rstrip("\n") + "\n  name: Outro nome\n"
    path = agencies_yaml(tmp_path, body)
    expect_error(path, "duplicate key", "'name'")


def test_cycle_in_parents(tmp_path: Path) -> None:
    path = agencies_yaml(
        tmp_path,
        agency("a", parent="c") + agency("b", parent="a") + agency("c", parent="b") + agency("d"),
    )
    message = expect_error(path, "cycle")
    assert "'a'" in message or "'b'" in message or "'c'" in message


def test_self_parent_is_a_cycle(tmp_path: Path) -> None:
    path = agencies_yaml(tmp_path, agency("mec", parent="mec"))
    expect_error(path, "cycle", "'mec'")


@pytest.mark.parametrize("field", ["name", "type", "url"])
def test_missing_required_field(tmp_path: Path, field: str) -> None:
    lines = [line for line in agency("mec").splitlines() if not line.strip().startswith(field)]
    path = agencies_yaml(tmp_path, "\n".join(lines) + "\n")
    expect_error(path, "'mec'", "missing required field", repr(field))


def test_empty_required_field(tmp_path: Path) -> None:
    path = agencies_yaml(tmp_path, agency("mec", name='""'))
    expect_error(path, "'mec'", "missing required field 'name'")


@pytest.mark.parametrize(
    "url",
    [
        "http://www.gov.br/mec/pt-br/assuntos/noticias",
        "www.gov.br/mec",
        "https://",
        "https://localhost/noticias",
        '"https://www.gov.br/mec/pt br/noticias"',
        "ftp://www.gov.br/mec",
        "https://www.gov.br:8443/mec",
    ],
)
def test_bad_url(tmp_path: Path, url: str) -> None:
    path = agencies_yaml(tmp_path, agency("mec", url=url))
    expect_error(path, "'mec'", "bad url")


def test_unknown_type_and_bad_key(tmp_path: Path) -> None:
    path = agencies_yaml(tmp_path, agency("mec", type="ministério"))
    expect_error(path, "'mec'", "unknown type")
    path = agencies_yaml(tmp_path, agency("MEC"), name="upper.yaml")
    expect_error(path, "bad agency key", "'MEC'")
    path = agencies_yaml(tmp_path, agency("on"), name="bool.yaml")  # YAML 1.1: on -> True
    expect_error(path, "bad agency key", "True", "quote")


def test_unknown_field_and_bad_shapes(tmp_path: Path) -> None:
    path = agencies_yaml(tmp_path, agency("mec").rstrip("\n") + "\n  sigla: MEC\n")
    expect_error(path, "'mec'", "unknown fields", "sigla")
    path = tmp_path / "list.yaml"
    path.write_text("- mec\n- saude\n")
    expect_error(path, "sources")
    path = tmp_path / "broken.yaml"
    path.write_text("sources:\n  mec: {name: [unclosed\n")
    expect_error(path, "invalid YAML")
    expect_error(tmp_path / "missing.yaml", "cannot read")


# --------------------------------------------------------------------------------------
# Validation of theme files
# --------------------------------------------------------------------------------------
GOOD_THEMES = """\
themes:
  - code: "01"
    label: Economia
    children:
      - code: "01.01"
        label: Política Econômica
        children:
          - {code: "01.01.01", label: Política Fiscal}
          - {code: "01.01.02", label: Inflação}
  - code: "02"
    label: Saúde
"""


def test_small_valid_theme_file(tmp_path: Path) -> None:
    themes = load_themes(themes_yaml(tmp_path, GOOD_THEMES))
    assert list(themes) == ["01", "01.01", "01.01.01", "01.01.02", "02"]
    assert themes["01.01.02"] == Theme("01.01.02", "Inflação", 3, "01.01")
    assert themes["02"] == Theme("02", "Saúde", 1, None)
    assert theme_path("01.01.02", themes) == (themes["01"], themes["01.01"], themes["01.01.02"])


def test_duplicate_theme_code(tmp_path: Path) -> None:
    body = GOOD_THEMES.replace('code: "01.01.02"', 'code: "01.01.01"')
    expect_error(
        themes_yaml(tmp_path, body), "duplicate theme code", "'01.01.01'", loader=load_themes
    )


def test_duplicate_yaml_key_in_theme(tmp_path: Path) -> None:
    body = GOOD_THEMES.replace("    label: Saúde\n", "    label: Saúde\n    label: Saude\n")
    expect_error(themes_yaml(tmp_path, body), "duplicate key", "'label'", loader=load_themes)


def test_level_two_code_at_level_three(tmp_path: Path) -> None:
    body = GOOD_THEMES.replace('{code: "01.01.02"', '{code: "01.02"')
    expect_error(themes_yaml(tmp_path, body), "bad level", "'01.02'", loader=load_themes)


def test_level_three_code_at_level_one(tmp_path: Path) -> None:
    body = GOOD_THEMES.replace('code: "02"', 'code: "02.01.01"')
    expect_error(themes_yaml(tmp_path, body), "bad level", "'02.01.01'", loader=load_themes)


def test_child_not_prefixed_by_parent(tmp_path: Path) -> None:
    body = GOOD_THEMES.replace('{code: "01.01.02"', '{code: "01.02.02"')
    expect_error(
        themes_yaml(tmp_path, body), "bad level", "'01.02.02'", "'01.01'", loader=load_themes
    )


def test_fourth_level_is_refused(tmp_path: Path) -> None:
    body = GOOD_THEMES.replace(
        '{code: "01.01.02", label: Inflação}',
        '{code: "01.01.02", label: Inflação, children: [{code: "01.01.02.01", label: IPCA}]}',
    )
    expect_error(themes_yaml(tmp_path, body), "bad level", "'01.01.02.01'", loader=load_themes)


def test_missing_theme_fields_and_unquoted_codes(tmp_path: Path) -> None:
    body = GOOD_THEMES.replace('{code: "01.01.02", label: Inflação}', '{code: "01.01.02"}')
    expect_error(
        themes_yaml(tmp_path, body),
        "'01.01.02'",
        "missing required field 'label'",
        loader=load_themes,
    )
    body = GOOD_THEMES.replace('  - code: "02"\n', "  - name: x\n")
    expect_error(
        themes_yaml(tmp_path, body, "nocode.yaml"),
        "missing required field 'code'",
        loader=load_themes,
    )
    body = GOOD_THEMES.replace('code: "01.01"', "code: 01.01")  # YAML float 1.01
    expect_error(
        themes_yaml(tmp_path, body, "float.yaml"), "bad theme code", "1.01", loader=load_themes
    )
    expect_error(
        themes_yaml(tmp_path, "themes: {}\n", "shape.yaml"), "must be a list", loader=load_themes
    )
    expect_error(themes_yaml(tmp_path, "other: []\n", "top.yaml"), "'themes:'", loader=load_themes)


def test_packaged_paths_are_inside_the_package() -> None:
    assert reference_data.AGENCIES_FILE.is_file()
    assert reference_data.THEMES_FILE.is_file()
    assert reference_data.AGENCIES_FILE.parent.parent == Path(reference_data.__file__).parent
