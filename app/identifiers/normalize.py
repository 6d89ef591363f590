"""Validating and normalising identifiers, one function per kind.

Two agencies that hold the same phone number, written differently, must
find each other: every value is brought to one canonical form on write and
on search, with the libraries made for each format. A value that is not
valid for its kind raises InvalidIdentifier (the caller answers 422).
"""

import functools
import ipaddress
import re
import string
from collections.abc import Callable
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

import idna
import phonenumbers
from Crypto.Hash import keccak
from stdnum import bitcoin, iban, luhn
from stdnum.exceptions import ValidationError


class IdentifierKind(StrEnum):
    phone = "phone"
    email = "email"
    iban = "iban"
    bank_card = "bank_card"
    crypto_address = "crypto_address"
    domain = "domain"
    ip = "ip"
    url = "url"
    document_number = "document_number"
    other = "other"


class InvalidIdentifier(ValueError):
    """The value is not a valid identifier of its kind; the message says why."""


def _phone(value: str, country: str | None) -> str:
    """E.164; a number without country code is read in `country` (the lead agency's)."""
    try:
        number = phonenumbers.parse(value, country)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE and country is None:
            raise InvalidIdentifier("not a phone number in international form (+ and country code)") from exc
        raise InvalidIdentifier("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# E.164 as _phone() writes it: a plus and up to 15 ASCII digits, the first not 0
# (other digits, such as full-width ones, are what normalising turns into these).
_E164 = re.compile(r"\+[1-9][0-9]{1,14}", re.ASCII)


@functools.cache
def _national_prefix(country_code: int) -> re.Pattern[str] | None:
    """The national prefix phonenumbers.parse() strips after this country code (as in +7 8...)."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    prefix = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(prefix) if prefix else None


def _e164_is_normalized(value: str) -> bool | None:
    """Whether _phone() gives `value` back, in any country, for the common shape of E.164; None
    when unsure. The number is built from its digits where phonenumbers.parse() would build the
    same one, and only checked for validity: parse() is most of the cost. Unsure (parse decides):
    no known country code in the first 3 digits, a national number starting with 0 (leading
    zeros are kept apart) or with what parse() would take for a national prefix. Otherwise the
    number's E.164 form is `value` itself: its digits are ASCII and its national number has no
    leading zero."""
    if not _E164.fullmatch(value):
        return None
    digits = value[1:]
    for length in (1, 2, 3):
        country_code = int(digits[:length])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[length:]
            break
    else:
        return None
    prefix = _national_prefix(country_code)
    if len(national) < 2 or national[0] == "0" or (prefix is not None and prefix.match(national)):
        return None
    return phonenumbers.is_valid_number(
        phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    )


def _domain(value: str) -> str:
    """IDNA (UTS #46) in its ASCII form, lower-cased, at least two labels."""
    name = value.strip().removesuffix(".")
    try:
        ascii_name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidIdentifier(f"not a domain name ({exc})") from exc
    if "." not in ascii_name:
        raise InvalidIdentifier("a domain name has at least two labels")
    return ascii_name.lower()


def _email(value: str) -> str:
    """The local part as given (it may be case-sensitive), the domain as _domain()."""
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or len(local) > 64 or any(c.isspace() for c in local):
        raise InvalidIdentifier("not an e-mail address")
    return f"{local}@{_domain(domain)}"


def _iban(value: str) -> str:
    try:
        return str(iban.validate(value))
    except ValidationError as exc:
        raise InvalidIdentifier(f"not a valid IBAN ({exc})") from exc


_CARD_SEPARATORS = re.compile(r"[\s-]")


def _bank_card(value: str) -> str:
    digits = _CARD_SEPARATORS.sub("", value)
    if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise InvalidIdentifier("a card number has 12 to 19 digits")
    try:
        return str(luhn.validate(digits))
    except ValidationError as exc:
        raise InvalidIdentifier("the card number fails the Luhn check") from exc


_ETHEREUM = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _eip55_ok(address: str) -> bool:
    """EIP-55: a mixed-case address carries a checksum in the case of its letters."""
    hexpart = address[2:]
    if hexpart == hexpart.lower() or hexpart == hexpart.upper():
        return True  # no checksum to check
    digest = keccak.new(digest_bits=256, data=hexpart.lower().encode()).hexdigest()
    return all(
        c.isdigit() or (c.isupper() == (int(d, 16) >= 8)) for c, d in zip(hexpart, digest, strict=False)
    )


def _crypto_address(value: str) -> str:
    """Bitcoin (base58check P2PKH/P2SH, bech32/bech32m segwit) or Ethereum (0x + 40 hex, EIP-55)."""
    address = value.strip()
    if _ETHEREUM.match(address):
        if not _eip55_ok(address):
            raise InvalidIdentifier("the Ethereum address fails its EIP-55 checksum")
        return address.lower()
    try:
        return str(bitcoin.validate(address))
    except ValidationError as exc:
        raise InvalidIdentifier(
            "not a Bitcoin (base58check or bech32) or Ethereum address with a valid checksum"
        ) from exc


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError as exc:
        raise InvalidIdentifier("not an IPv4 or IPv6 address") from exc


_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def _url(value: str) -> str:
    """Scheme and host lower-cased (host as IDNA), a default port dropped; the rest as given."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidIdentifier("not a URL") from exc
    scheme = parts.scheme.lower()
    if not _SCHEME.match(scheme) or not parts.hostname:
        raise InvalidIdentifier("a URL has a scheme and a host (https://example.com/...)")
    host = parts.hostname
    try:
        host = f"[{ipaddress.IPv6Address(host)}]" if ":" in host else str(ipaddress.IPv4Address(host))
    except ValueError:
        host = _domain(host)
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    path = parts.path or ("/" if scheme in _DEFAULT_PORTS else "")
    return urlunsplit((scheme, netloc, path, parts.query, parts.fragment))


_DOCUMENT_SEPARATORS = re.compile(r"[\s\-./]")


def _document_number(value: str) -> str:
    """Upper-cased, without spaces, hyphens, dots or slashes; letters of any script and digits."""
    compact = _DOCUMENT_SEPARATORS.sub("", value).upper()
    if not compact or not compact.isalnum():
        raise InvalidIdentifier("a document number has letters and digits only")
    return compact


def _other(value: str) -> str:
    text = " ".join(value.split())
    if not text or not all(c.isprintable() for c in text):
        raise InvalidIdentifier("an identifier of kind other is printable text")
    return text


_NORMALIZERS: dict[IdentifierKind, Callable[[str], str]] = {
    IdentifierKind.email: _email,
    IdentifierKind.iban: _iban,
    IdentifierKind.bank_card: _bank_card,
    IdentifierKind.crypto_address: _crypto_address,
    IdentifierKind.domain: _domain,
    IdentifierKind.ip: _ip,
    IdentifierKind.url: _url,
    IdentifierKind.document_number: _document_number,
    IdentifierKind.other: _other,
}


def is_normalized(kind: IdentifierKind, value: str) -> bool:
    """Whether normalize() gives `value` back whatever the country: a value sent as normalised
    (a peer's search) is checked, never trusted. A phone number in E.164 is mostly checked
    without phonenumbers' parse, most of what normalising one costs; anything else is
    normalised and compared."""
    if kind == IdentifierKind.phone:
        known = _e164_is_normalized(value)
        if known is not None:
            return known
    try:
        return normalize(kind, value, country=None) == value
    except InvalidIdentifier:
        return False


def normalize(kind: IdentifierKind, value: str, *, country: str | None) -> str:
    """The canonical form of `value`; `country` (ISO alpha-2) reads phone numbers
    written without a country code. Raises InvalidIdentifier."""
    if any(c in value for c in "\x00\r\n") or not set(value) - set(string.whitespace):
        raise InvalidIdentifier("an identifier is one line of text")
    if kind == IdentifierKind.phone:
        return _phone(value, country)
    return _NORMALIZERS[kind](value)
