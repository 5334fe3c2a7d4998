-- RSA signature checks over numeric: s^e mod n compared with the encoded message built from
-- the hash (RFC 8017 EMSA-PKCS1-v1_5; the padding is never parsed).

-- base^e mod m, left to right over the bits of e (e >= 1).
CREATE OR REPLACE FUNCTION @extschema@._outseta_modpow(base numeric, e bigint, m numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    r numeric := base;
    bit integer := 62;
BEGIN
    WHILE bit >= 0 AND (e >> bit) & 1 = 0 LOOP
        bit := bit - 1;
    END LOOP;
    bit := bit - 1;  -- the top bit is r = base
    WHILE bit >= 0 LOOP
        r := mod(r * r, m);
        IF (e >> bit) & 1 = 1 THEN
            r := mod(r * base, m);
        END IF;
        bit := bit - 1;
    END LOOP;
    RETURN mod(r, m);
END
$fn$;

-- The DigestInfo prefix of EMSA-PKCS1-v1_5 for a hash, and the hash itself.
CREATE OR REPLACE FUNCTION @extschema@._outseta_digest(hash text, msg bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT CASE hash
        WHEN 'SHA-256' THEN sha256(msg)
        WHEN 'SHA-384' THEN sha384(msg)
        WHEN 'SHA-512' THEN sha512(msg)
    END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@._outseta_digest_info(hash text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT CASE hash
        WHEN 'SHA-256' THEN '\x3031300d060960864801650304020105000420'::bytea
        WHEN 'SHA-384' THEN '\x3041300d060960864801650304020205000430'::bytea
        WHEN 'SHA-512' THEN '\x3051300d060960864801650304020305000440'::bytea
    END
$fn$;

-- Whether sig is a valid RSASSA-PKCS1-v1_5 signature of msg under (n, e), n being nbytes
-- long. As the native edition's crypto library: the signature is exactly as long as the
-- modulus, s < n, moduli of 2048 to 8192 bits.
CREATE OR REPLACE FUNCTION @extschema@._outseta_rsa_pkcs1_verify(
    n numeric, e bigint, nbytes integer, hash text, msg bytea, sig bytea) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    t bytea := @extschema@._outseta_digest_info(hash) || @extschema@._outseta_digest(hash, msg);
    s numeric;
BEGIN
    IF nbytes > 1024 OR octet_length(sig) <> nbytes OR nbytes < octet_length(t) + 11 THEN
        RETURN false;
    END IF;
    s := @extschema@._outseta_num(sig);
    IF s >= n THEN
        RETURN false;
    END IF;
    -- EM = 0x00 0x01 FF..FF 0x00 T, as a number (its leading zero byte drops out)
    RETURN @extschema@._outseta_modpow(s, e, n) = @extschema@._outseta_num(
        '\x01'::bytea || decode(repeat('ff', nbytes - octet_length(t) - 3), 'hex') || '\x00'::bytea || t);
END
$fn$;

-- The ROCA fingerprint (CVE-2017-15361): moduli from the affected Infineon library are, modulo
-- each of these small primes, a power of 65537. A random modulus passes all with negligible
-- probability.
CREATE OR REPLACE FUNCTION @extschema@._outseta_has_roca(n numeric) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    p integer;
    r integer;
    g integer;
    x integer;
    i integer;
    found boolean;
BEGIN
    FOREACH p IN ARRAY ARRAY[3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67,
                             71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137,
                             139, 149, 151, 157, 163, 167] LOOP
        r := mod(n, p)::integer;
        g := 65537 % p;
        x := 1;
        found := false;
        FOR i IN 1..p LOOP
            IF x = r THEN
                found := true;
                EXIT;
            END IF;
            x := x * g % p;
        END LOOP;
        IF NOT found THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$fn$;
