-- RSA signature checks over numeric: s^e mod n compared with the encoded message built from
-- the hash (RFC 8017 EMSA-PKCS1-v1_5; the padding is never parsed). What depends on the key
-- alone is computed once, when the key set is stored (_outseta_rsa_key): Barrett's constant
-- for the reductions, and the encoded message of each hash with the digest left zero.

-- The DigestInfo prefix of EMSA-PKCS1-v1_5 for a hash (its last byte: the digest's length).
CREATE OR REPLACE FUNCTION @extschema@._outseta_digest_info(hash text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE hash
        WHEN 'SHA-256' THEN '\x3031300d060960864801650304020105000420'::pg_catalog.bytea
        WHEN 'SHA-384' THEN '\x3041300d060960864801650304020205000430'::pg_catalog.bytea
        WHEN 'SHA-512' THEN '\x3051300d060960864801650304020305000440'::pg_catalog.bytea
    END
$fn$;

-- Per RSA key (modulus n of nbytes bytes): mu = floor(10^(2k) / n) for Barrett's reduction
-- (k: n's decimal digits), and for each hash the encoded message 0x00 0x01 FF..FF 0x00
-- DigestInfo with a zero digest, as a number (the digest is added to it). NULL em_* when the
-- modulus is too short for that hash.
CREATE OR REPLACE FUNCTION @extschema@._outseta_rsa_key(n numeric, nbytes integer,
    OUT digits integer, OUT mu numeric, OUT em256 numeric, OUT em384 numeric, OUT em512 numeric)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    hash text;
    di bytea;
    hlen integer;
    em numeric;
BEGIN
    digits := length(n::text);
    mu := div(10::numeric ^ (2 * digits), n);
    FOREACH hash IN ARRAY ARRAY['SHA-256', 'SHA-384', 'SHA-512'] LOOP
        di := @extschema@._outseta_digest_info(hash);
        hlen := get_byte(di, octet_length(di) - 1);
        em := NULL;
        IF nbytes >= octet_length(di) + hlen + 11 THEN
            em := @extschema@._outseta_num('\x01'::bytea || decode(repeat('ff', nbytes - octet_length(di) - hlen - 3), 'hex')
                || '\x00'::bytea || di || decode(repeat('00', hlen), 'hex'));
        END IF;
        IF hash = 'SHA-256' THEN em256 := em; ELSIF hash = 'SHA-384' THEN em384 := em; ELSE em512 := em; END IF;
    END LOOP;
END
$fn$;

-- base^e mod n, left to right over the bits of e (e >= 1), each product reduced with
-- Barrett's method in decimal (its shifts are exact multiplications by 10^-j): two
-- multiplications instead of a division, which numeric makes about four times as costly.
CREATE OR REPLACE FUNCTION @extschema@._outseta_modpow(base numeric, e bigint, n numeric, mu numeric, digits integer)
RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    lo numeric := ('1e-' || (digits - 1))::numeric;
    hi numeric := ('1e-' || (digits + 1))::numeric;
    r numeric := base;
    x numeric;
    bit integer := 62;
BEGIN
    WHILE bit >= 0 AND (e >> bit) & 1 = 0 LOOP
        bit := bit - 1;
    END LOOP;
    bit := bit - 1;  -- the top bit is r = base
    WHILE bit >= 0 LOOP
        x := r * r;
        IF (e >> bit) & 1 = 1 THEN
            -- reduce the square first, then multiply by base and reduce again
            r := x - trunc(trunc(x * lo) * mu * hi) * n;
            WHILE r >= n LOOP r := r - n; END LOOP;
            x := r * base;
        END IF;
        r := x - trunc(trunc(x * lo) * mu * hi) * n;
        WHILE r >= n LOOP r := r - n; END LOOP;
        bit := bit - 1;
    END LOOP;
    RETURN r;
END
$fn$;

-- Whether sig is a valid RSASSA-PKCS1-v1_5 signature of msg under the key (n, e; the rest
-- from _outseta_rsa_key). As the native edition's crypto library: the signature is exactly as
-- long as the modulus, s < n, moduli of 2048 to 8192 bits.
CREATE OR REPLACE FUNCTION @extschema@._outseta_rsa_pkcs1_verify(
    n numeric, e bigint, nbytes integer, digits integer, mu numeric, em_base numeric,
    hash text, msg bytea, sig bytea) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    s numeric;
BEGIN
    IF nbytes > 1024 OR em_base IS NULL OR octet_length(sig) IS DISTINCT FROM nbytes THEN
        RETURN false;
    END IF;
    s := @extschema@._outseta_num(sig);
    IF s >= n THEN
        RETURN false;
    END IF;
    RETURN @extschema@._outseta_modpow(s, e, n, mu, digits) = em_base + @extschema@._outseta_num(CASE hash
        WHEN 'SHA-256' THEN sha256(msg) WHEN 'SHA-384' THEN sha384(msg) WHEN 'SHA-512' THEN sha512(msg) END);
END
$fn$;

-- The ROCA fingerprint (CVE-2017-15361): moduli from the affected Infineon library are, modulo
-- each of these small primes, a power of 65537. A random modulus passes all with negligible
-- probability.
CREATE OR REPLACE FUNCTION @extschema@._outseta_has_roca(n numeric) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
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
