#!/usr/bin/env python3
"""mk/pem2c.py - a PEM bundle of CA certificates as a const C table.

    python3 mk/pem2c.py BUNDLE.pem OUT.h

OUT.h defines `cm_builtin_anchors[]` (br_x509_trust_anchor, as BearSSL's
X.509 engine takes them) and CM_BUILTIN_ANCHORS, their number. Compile
calid_mcp.c with -DCM_TRUST_ANCHORS_H='"OUT.h"' and the anchors live in
const data (flash on a microcontroller): --ca-file becomes optional and no
file system is needed.

Each anchor is what the server's own loader makes of the same certificate:
the subject name as encoded (DER), the CA flag from Basic Constraints, and
the public key (RSA modulus and exponent without leading zero bytes, or an
EC curve and point). Certificates with other key types are skipped, as the
loader skips them. Only the standard library: no OpenSSL needed.
"""
import base64
import re
import sys

OID_RSA = "1.2.840.113549.1.1.1"
OID_EC = "1.2.840.10045.2.1"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
# BearSSL's curve ids (BR_EC_*, the TLS NamedCurve numbers)
CURVES = {"1.2.840.10045.3.1.7": 23, "1.3.132.0.34": 24, "1.3.132.0.35": 25}


class DerError(ValueError):
    pass


def der_item(buf, pos):
    """(tag, start of content, end of content) of the element at pos."""
    if pos + 2 > len(buf):
        raise DerError("truncated element")
    tag, n = buf[pos], buf[pos + 1]
    pos += 2
    if n & 0x80:
        count = n & 0x7F
        if count == 0 or count > 4 or pos + count > len(buf):
            raise DerError("bad length")
        n = int.from_bytes(buf[pos:pos + count], "big")
        pos += count
    if pos + n > len(buf):
        raise DerError("element runs past its parent")
    return tag, pos, pos + n


def der_children(buf, start, end):
    """[(tag, element start, content start, content end)] inside a constructed element."""
    out = []
    pos = start
    while pos < end:
        tag, cs, ce = der_item(buf, pos)
        out.append((tag, pos, cs, ce))
        pos = ce
    return out


def oid_text(b):
    first = b[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    v = 0
    for byte in b[1:]:
        v = (v << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(v)
            v = 0
    return ".".join(str(p) for p in parts)


def basic_constraints_ca(der, exts):
    """The cA flag of a Basic Constraints extension among the [3] extensions."""
    _, _, seq_s, seq_e = exts[0]
    for _, _, es, ee in der_children(der, seq_s, seq_e):
        fields = der_children(der, es, ee)
        if oid_text(der[fields[0][2]:fields[0][3]]) != OID_BASIC_CONSTRAINTS:
            continue
        octets = fields[-1]
        _, bs, be = der_item(der, octets[2])
        inner = der_children(der, bs, be)
        return bool(inner) and inner[0][0] == 0x01 and der[inner[0][2]] != 0
    return False


def anchor(der):
    """dict(dn=bytes, ca=bool, key=('rsa', n, e) | ('ec', curve, q)) or None (unsupported key)."""
    _, cs, ce = der_item(der, 0)
    tbs = der_children(der, cs, ce)[0]
    fields = der_children(der, tbs[2], tbs[3])
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    # serial, signature, issuer, validity, subject, subjectPublicKeyInfo, [1] [2] [3]
    subject, spki = fields[4], fields[5]
    exts = [f for f in fields[6:] if f[0] == 0xA3]
    ext_children = der_children(der, exts[0][2], exts[0][3]) if exts else []
    alg, key_bits = der_children(der, spki[2], spki[3])
    alg_fields = der_children(der, alg[2], alg[3])
    alg_oid = oid_text(der[alg_fields[0][2]:alg_fields[0][3]])
    bits = der[key_bits[2] + 1:key_bits[3]]  # skip the unused-bits byte
    if alg_oid == OID_RSA:
        _, ks, ke = der_item(bits, 0)
        n, e = der_children(bits, ks, ke)
        key = ("rsa", bits[n[2]:n[3]].lstrip(b"\0"), bits[e[2]:e[3]].lstrip(b"\0"))
    elif alg_oid == OID_EC and len(alg_fields) > 1:
        curve = CURVES.get(oid_text(der[alg_fields[1][2]:alg_fields[1][3]]))
        if curve is None:
            return None
        key = ("ec", curve, bits)
    else:
        return None
    return {"dn": der[subject[1]:subject[3]], "ca": bool(ext_children) and basic_constraints_ca(der, ext_children),
            "key": key}


def c_bytes(name, data):
    rows = [", ".join("0x%02x" % b for b in data[i:i + 12]) for i in range(0, len(data), 12)]
    return "static const unsigned char %s[%d] = {\n    %s\n};\n" % (name, len(data), ",\n    ".join(rows))


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: pem2c.py BUNDLE.pem OUT.h\n")
        return 2
    with open(argv[1], "rb") as f:
        text = f.read().decode("ascii", "replace")
    blocks = re.findall(r"-----BEGIN (?:X509 )?CERTIFICATE-----(.*?)-----END (?:X509 )?CERTIFICATE-----", text, re.S)
    anchors, skipped = [], 0
    for block in blocks:
        try:
            a = anchor(base64.b64decode("".join(block.split())))
        except (DerError, ValueError, IndexError):
            a = None
        if a is None:
            skipped += 1
        else:
            anchors.append(a)
    if not anchors:
        sys.stderr.write("pem2c.py: no usable certificate in %s\n" % argv[1])
        return 1
    out = ["/* Generated by mk/pem2c.py from %s: %d trust anchors (%d skipped). Do not edit. */\n"
           % (argv[1], len(anchors), skipped)]
    rows = []
    for i, a in enumerate(anchors):
        out.append(c_bytes("cm_ta%d_dn" % i, a["dn"]))
        flags = "BR_X509_TA_CA" if a["ca"] else "0"
        if a["key"][0] == "rsa":
            out.append(c_bytes("cm_ta%d_n" % i, a["key"][1]))
            out.append(c_bytes("cm_ta%d_e" % i, a["key"][2]))
            key = ("{BR_KEYTYPE_RSA, {.rsa = {(unsigned char *)cm_ta%d_n, sizeof cm_ta%d_n, "
                   "(unsigned char *)cm_ta%d_e, sizeof cm_ta%d_e}}}" % (i, i, i, i))
        else:
            out.append(c_bytes("cm_ta%d_q" % i, a["key"][2]))
            key = "{BR_KEYTYPE_EC, {.ec = {%d, (unsigned char *)cm_ta%d_q, sizeof cm_ta%d_q}}}" % (a["key"][1], i, i)
        rows.append("    {{(unsigned char *)cm_ta%d_dn, sizeof cm_ta%d_dn}, %s, %s},\n" % (i, i, flags, key))
    out.append("static const br_x509_trust_anchor cm_builtin_anchors[] = {\n" + "".join(rows) + "};\n")
    out.append("#define CM_BUILTIN_ANCHORS_SOURCE \"%s\"\n" % argv[1].replace("\\", "/").replace('"', ""))
    out.append("#define CM_BUILTIN_ANCHORS (sizeof cm_builtin_anchors / sizeof cm_builtin_anchors[0])\n")
    with open(argv[2], "w") as f:
        f.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
