"""Each kind: valid values in their written forms reach one canonical form; invalid ones are refused."""

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.identifiers.normalize import IdentifierKind, InvalidIdentifier, is_normalized, normalize

K = IdentifierKind

VALID = [
    (K.phone, "+7 701 123 45 67", None, "+77011234567"),
    (K.phone, "+7 (701) 123-45-67", "UA", "+77011234567"),
    (K.phone, "8 701 123 45 67", "KZ", "+77011234567"),  # national form, read in Kazakhstan
    (K.phone, "701 123 45 67", "KZ", "+77011234567"),
    (K.phone, "044 123 45 67", "UA", "+380441234567"),  # the same digits mean Kyiv in Ukraine
    (K.email, "Ivan.Petrenko@Example.COM", None, "Ivan.Petrenko@example.com"),
    (K.email, "info@пример.рф", None, "info@xn--e1afmkfd.xn--p1ai"),
    (K.iban, "GB82 WEST 1234 5698 7654 32", None, "GB82WEST12345698765432"),
    (K.iban, "kz86 125k zt50 0410 0100", None, "KZ86125KZT5004100100"),
    (K.bank_card, "4111 1111 1111 1111", None, "4111111111111111"),
    (K.bank_card, "5500-0000-0000-0004", None, "5500000000000004"),
    (K.crypto_address, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", None, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
    (K.crypto_address, "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", None, "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"),
    (
        K.crypto_address,
        "BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ",
        None,
        "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    ),
    (
        K.crypto_address,
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",  # EIP-55's own example
        None,
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
    ),
    (
        K.crypto_address,
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        None,
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
    ),
    (K.domain, "WWW.Example.COM.", None, "www.example.com"),
    (K.domain, "пример.рф", None, "xn--e1afmkfd.xn--p1ai"),
    (K.ip, " 10.0.0.1 ", None, "10.0.0.1"),
    (K.ip, "2001:DB8:0:0:0:0:0:1", None, "2001:db8::1"),
    (K.url, "HTTPS://Example.COM:443/Path?q=A#F", None, "https://example.com/Path?q=A#F"),
    (K.url, "http://Example.com", None, "http://example.com/"),
    (K.url, "http://пример.рф:8080/x", None, "http://xn--e1afmkfd.xn--p1ai:8080/x"),
    (K.url, "http://[2001:DB8::1]/", None, "http://[2001:db8::1]/"),
    (K.document_number, "ab 123-456", None, "AB123456"),
    (K.document_number, "фк 123456", None, "ФК123456"),  # noqa: RUF001  (Cyrillic on purpose)
    (K.other, "  Telegram   @support_chargeback ", None, "Telegram @support_chargeback"),
]

INVALID = [
    (K.phone, "12345", "KZ"),
    (K.phone, "+7 701", None),
    (K.phone, "not a number", "KZ"),
    (K.phone, "701 123 45 67", None),  # no country code and no country to read it in
    (K.phone, "+7 000 000 00 00", None),
    (K.email, "no-at-sign.example.com", None),
    (K.email, "@example.com", None),
    (K.email, "a@localhost", None),
    (K.email, "a b@example.com", None),
    (K.iban, "GB82 WEST 1234 5698 7654 33", None),  # checksum
    (K.iban, "XX00 1234", None),
    (K.bank_card, "4111 1111 1111 1112", None),  # Luhn
    (K.bank_card, "1234", None),
    (K.bank_card, "4111 1111 1111 111a", None),
    (K.crypto_address, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", None),  # base58check
    (K.crypto_address, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdx", None),  # bech32
    (K.crypto_address, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", None),  # EIP-55
    (K.crypto_address, "0x5aaeb6053f3e94c9b9a09f33669435e7ef1bea", None),
    (K.domain, "a_b.com", None),
    (K.domain, "localhost", None),
    (K.domain, "ex..com", None),
    (K.ip, "300.1.1.1", None),
    (K.ip, "192.168.001.001", None),
    (K.url, "example.com/path", None),
    (K.url, "http://", None),
    (K.url, "http://example.com:99999/", None),
    (K.document_number, "!!!", None),
    (K.other, "   ", None),
    (K.other, "two\nlines", None),
]


@pytest.mark.parametrize(("kind", "value", "country", "expected"), VALID)
def test_valid_values_are_normalised(kind: K, value: str, country: str | None, expected: str) -> None:
    assert normalize(kind, value, country=country) == expected
    # Normalising is idempotent: a normalised value searched again finds itself.
    assert normalize(kind, expected, country=country) == expected


@pytest.mark.parametrize(("kind", "value", "country"), INVALID)
def test_invalid_values_are_refused(kind: K, value: str, country: str | None) -> None:
    with pytest.raises(InvalidIdentifier):
        normalize(kind, value, country=country)


# --- is_normalized: what a peer checks of the values a searcher sends normalised -----------------------


def _phone_corpus() -> list[str]:
    """E.164 numbers of every region and number type phonenumbers knows, each also a digit short,
    a digit long, and behind 0, 1, 8 and its country's national prefix (which parse() strips);
    and numbers of random digits behind every country code."""
    rng = random.Random(20261207)
    numbers: set[str] = set()
    examples = [
        phonenumbers.example_number_for_type(region, kind)
        for region in phonenumbers.SUPPORTED_REGIONS
        for kind in phonenumbers.PhoneNumberType.values()
    ]
    examples += [
        phonenumbers.example_number_for_non_geo_entity(code)
        for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
    ]
    for example in filter(None, examples):
        country_code = example.country_code or 0
        national = phonenumbers.national_significant_number(example)
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            country_code, phonenumbers.region_code_for_country_code(country_code)
        )
        prefixes = {"0", "1", "8", metadata.national_prefix if metadata else None}
        numbers.update(
            f"+{country_code}{digits}"
            for digits in (national, national[:-1], national + "5", *(p + national for p in prefixes if p))
        )
    for country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        for length in [*range(2, 14)] * 3:
            numbers.add(f"+{country_code}" + "".join(rng.choice("0123456789") for _ in range(length)))
    return sorted(numbers)


def _gives_back(value: str, country: str | None) -> bool:
    try:
        return normalize(K.phone, value, country=country) == value
    except InvalidIdentifier:
        return False


def test_a_phone_number_is_normalized_exactly_when_normalising_gives_it_back() -> None:
    corpus = _phone_corpus()
    normal = {x for x in corpus if _gives_back(x, None)}
    assert len(normal) > 1000 and len(corpus) - len(normal) > 10_000
    assert [x for x in corpus if is_normalized(K.phone, x) != (x in normal)] == []
    # Written with its plus and country code, a number is read the same in any country.
    sample = corpus[::50]
    for country in ("KZ", "UA", "IT", "US"):
        assert [x for x in sample if is_normalized(K.phone, x) != _gives_back(x, country)] == []


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"\+[0-9]{1,17}", fullmatch=True)
    | st.text(alphabet="+0123456789 -()８", min_size=1, max_size=20)  # noqa: RUF001  (full-width 8)
)
def test_any_text_is_normalized_exactly_when_normalising_gives_it_back(value: str) -> None:
    assert is_normalized(K.phone, value) == _gives_back(value, None) == _gives_back(value, "KZ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+77011234567", True),
        ("+380441234567", True),
        ("+12015550123", True),
        ("+447400123456", True),
        ("+4915123456789", True),
        ("+7701123456", False),  # a digit short: not a valid number
        ("+77011234567890", False),
    ],
)
def test_a_phone_number_in_e164_is_checked_without_parsing_it(
    value: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing is most of what normalising costs: the check a peer makes of each number skips it."""

    def parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(phonenumbers, "parse", parse)
    assert is_normalized(K.phone, value) is expected


@pytest.mark.parametrize(
    "value",
    [
        "+7 701 123 45 67",
        "+787011234567",  # the 8 is Kazakhstan's national prefix: +77011234567
        "+3800441234567",  # the 0 is Ukraine's: +380441234567
        "+3758102450921",  # valid as +375 810..., but the 8 is Belarus's national prefix: invalid
        "+７７０１１２３４５６７",  # noqa: RUF001  (full-width digits)
        "87011234567",
    ],
)
def test_a_phone_number_not_in_its_normal_form_is_not_normalized(value: str) -> None:
    assert not is_normalized(K.phone, value)


@pytest.mark.parametrize(("kind", "value", "country", "expected"), VALID)
def test_other_kinds_are_normalized_when_in_their_normal_form(
    kind: K, value: str, country: str | None, expected: str
) -> None:
    assert is_normalized(kind, expected)
    assert is_normalized(kind, value) == (value == expected and country is None)


@pytest.mark.parametrize(("kind", "value", "country"), INVALID)
def test_an_invalid_value_is_not_normalized(kind: K, value: str, country: str | None) -> None:
    assert not is_normalized(kind, value)
