"""Each kind: valid values in their written forms reach one canonical form; invalid ones are refused."""

import pytest

from app.identifiers.normalize import IdentifierKind, InvalidIdentifier, normalize

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
