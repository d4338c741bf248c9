-- agentlab_tli.lua: a Wireshark (4.0 or later, Lua 5.2) dissector for
-- agentlab's TLI, the agent <-> Policy Server protocol (docs/protocol.md).
--
-- It shows what the vendor's traffic hides: the clear handshake (trusted
-- host name, version, error codes 3152-3157) always, and, given the key
-- log the Policy Servers write with `smps --keylog` / `agentlab run
-- --keylog`, every request and response decrypted and decoded from
-- protobuf. Usage: wireshark/README.md.
--
-- Wireshark's Lua has no cryptography, so AES-256 (the encryption
-- direction is all that GCM needs) and GHASH are written here in plain
-- Lua 5.2 with bit32. They are slow next to C, and that is fine for a
-- lab's capture; they are not constant time, and that is fine for a key
-- you already hold.

local MAX_FRAME = 1048576 -- tli.MaxFrame
local HEADER = 5          -- uint32 length, uint8 type
local TAG_LEN = 16        -- AES-GCM tag
local KEYLOG_LABEL = "TLI_SESSION"
local DEFAULT_PORT = 44443

local band, bor, bxor = bit32.band, bit32.bor, bit32.bxor
local lshift, rshift, lrotate, rrotate = bit32.lshift, bit32.rshift, bit32.lrotate, bit32.rrotate
local sbyte, schar, sformat = string.byte, string.char, string.format

local tli = Proto("agentlab_tli", "agentlab TLI (agent <-> Policy Server)")

---------------------------------------------------------------------------
-- What proto/tli.proto says. The Go test (wireshark/dissector_test.go)
-- checks this table against the compiled descriptor, field by field, so
-- keep one field per line in this form. A type is a scalar, an enum of
-- ENUMS, or a message of MESSAGES; map<string,string> is its entry message.
---------------------------------------------------------------------------

-- ManagementCode is listed for the schema check: ManagementCommand.code is
-- a plain uint32 on the wire, and its name field carries the name.
local ENUMS = {
  Mode = {
    [0] = "MODE_AGENT", [1] = "MODE_ADMIN",
  },
  Result = {
    [0] = "SUCCESS", [1] = "YES", [2] = "NO", [3] = "CHALLENGE",
    [-1] = "FAILURE", [-2] = "TIMEOUT", [-3] = "NOCONNECTION",
  },
  ManagementCode = {
    [0] = "CONFIG_CHANGED", [189] = "AFFILIATE_KEY", [190] = "AGENT_KEY_NEXT",
    [191] = "AGENT_KEY_LAST", [192] = "AGENT_KEY_CURRENT", [193] = "AGENT_KEY_PERSISTENT",
    [194] = "FLUSH_ALL", [195] = "FLUSH_ALL_USERS", [196] = "FLUSH_USER",
    [197] = "FLUSH_ALL_REALMS", [198] = "FLUSH_REALM",
  },
}

local MESSAGES = {
  ClientHello = {
    { 1, "version", "uint32" },
    { 2, "mode", "Mode" },
    { 3, "trusted_host", "string" },
    { 4, "client_nonce", "bytes" },
    { 5, "proof", "bytes" },
    { 6, "ecdh_public", "bytes" },
  },
  ServerHello = {
    { 1, "version", "uint32" },
    { 2, "server_nonce", "bytes" },
    { 3, "proof", "bytes" },
    { 4, "ecdh_public", "bytes" },
    { 5, "server_name", "string" },
  },
  ClientConfirm = {
    { 1, "proof", "bytes" },
  },
  HandshakeError = {
    { 1, "code", "int32" },
    { 2, "message", "string" },
  },
  Request = {
    { 1, "id", "uint64" },
    { 10, "get_host_config", "GetHostConfigRequest" },
    { 11, "get_agent_config", "GetAgentConfigRequest" },
    { 12, "set_agent_info", "SetAgentInfoRequest" },
    { 13, "is_protected", "IsProtectedRequest" },
    { 14, "login", "LoginRequest" },
    { 15, "authorize", "AuthorizeRequest" },
    { 16, "logout", "LogoutRequest" },
    { 17, "do_management", "DoManagementRequest" },
    { 30, "register_host", "RegisterHostRequest" },
    { 31, "queue_management", "QueueManagementRequest" },
  },
  Response = {
    { 1, "id", "uint64" },
    { 2, "result", "Result" },
    { 3, "message", "string" },
    { 10, "host_config", "HostConfig" },
    { 11, "agent_config", "AgentConfig" },
    { 13, "is_protected", "IsProtectedResponse" },
    { 14, "login", "LoginResponse" },
    { 15, "authorize", "AuthorizeResponse" },
    { 17, "do_management", "DoManagementResponse" },
    { 30, "register_host", "RegisterHostResponse" },
  },
  GetHostConfigRequest = {
    { 1, "name", "string" },
  },
  HostConfig = {
    { 1, "name", "string" },
    { 2, "policy_servers", "PolicyServerAddr", repeated = true },
    { 3, "enable_failover", "bool" },
    { 4, "min_sockets_per_port", "uint32" },
    { 5, "new_socket_step", "uint32" },
    { 6, "max_sockets_per_port", "uint32" },
    { 7, "request_timeout_seconds", "uint32" },
    { 8, "failover_threshold_percent", "uint32" },
    { 9, "clusters", "Cluster", repeated = true },
  },
  PolicyServerAddr = {
    { 1, "host", "string" },
    { 2, "accounting_port", "uint32" },
    { 3, "authentication_port", "uint32" },
    { 4, "authorization_port", "uint32" },
  },
  Cluster = {
    { 1, "servers", "PolicyServerAddr", repeated = true },
  },
  GetAgentConfigRequest = {
    { 1, "name", "string" },
  },
  AgentConfig = {
    { 1, "name", "string" },
    { 2, "default_agent_name", "string" },
    { 3, "agent_names", "string", repeated = true },
    { 4, "ps_poll_interval_seconds", "uint32" },
    { 5, "max_resource_cache_size", "uint32" },
    { 6, "resource_cache_timeout_seconds", "uint32" },
    { 7, "max_session_cache_size", "uint32" },
    { 8, "log_file", "bool" },
    { 9, "log_file_name", "string" },
    { 10, "log_append", "bool" },
    { 11, "log_file_size_mb", "uint32" },
    { 12, "log_local_time", "bool" },
    { 13, "trace_file", "bool" },
    { 14, "trace_file_name", "string" },
    { 15, "trace_file_size_mb", "uint32" },
    { 16, "trace_config_file", "string" },
    { 17, "allow_local_config", "bool" },
    { 18, "extra", "ExtraEntry", repeated = true },
  },
  ExtraEntry = {
    { 1, "key", "string" },
    { 2, "value", "string" },
  },
  SetAgentInfoRequest = {
    { 1, "agent_name", "string" },
    { 2, "info", "string" },
    { 3, "pid", "uint32" },
    { 4, "role", "string" },
  },
  IsProtectedRequest = {
    { 1, "agent_name", "string" },
    { 2, "resource", "string" },
    { 3, "action", "string" },
  },
  IsProtectedResponse = {
    { 1, "realm", "string" },
    { 2, "auth_scheme", "string" },
    { 3, "login_url", "string" },
    { 4, "realm_oid", "string" },
  },
  LoginRequest = {
    { 1, "agent_name", "string" },
    { 2, "realm", "string" },
    { 3, "user", "string" },
    { 4, "password", "string" },
    { 5, "client_ip", "string" },
  },
  LoginResponse = {
    { 1, "session_token", "string" },
    { 2, "user_dn", "string" },
    { 3, "expires_unix", "int64" },
    { 4, "idle_timeout_seconds", "uint32" },
  },
  AuthorizeRequest = {
    { 1, "agent_name", "string" },
    { 2, "session_token", "string" },
    { 3, "resource", "string" },
    { 4, "action", "string" },
    { 5, "client_ip", "string" },
  },
  AuthorizeResponse = {
    { 1, "headers", "Header", repeated = true },
    { 2, "policy", "string" },
    { 3, "session_token", "string" },
  },
  Header = {
    { 1, "name", "string" },
    { 2, "value", "string" },
  },
  LogoutRequest = {
    { 1, "agent_name", "string" },
    { 2, "session_token", "string" },
  },
  DoManagementRequest = {
    { 1, "agent_name", "string" },
    { 2, "command", "string" },
  },
  DoManagementResponse = {
    { 1, "commands", "ManagementCommand", repeated = true },
  },
  ManagementCommand = {
    { 1, "code", "uint32" },
    { 2, "name", "string" },
    { 3, "arg", "string" },
  },
  RegisterHostRequest = {
    { 1, "admin_user", "string" },
    { 2, "admin_password", "string" },
    { 3, "trusted_host", "string" },
    { 4, "host_config_object", "string" },
    { 5, "overwrite", "bool" },
    { 6, "fips_mode", "string" },
    { 7, "shared_secret", "bytes" },
  },
  RegisterHostResponse = {
    { 1, "shared_secret", "bytes" },
    { 2, "host_config_object", "string" },
  },
  QueueManagementRequest = {
    { 1, "admin_user", "string" },
    { 2, "admin_password", "string" },
    { 3, "agent_name", "string" },
    { 4, "command", "ManagementCommand" },
  },
}

-- The vendor's handshake error codes (tli.CodeText).
local HANDSHAKE_CODES = {
  [3152] = "No client hello",
  [3153] = "Bad version",
  [3154] = "Shared secret incorrect for this client",
  [3155] = "Failed to send server hello",
  [3156] = "No client ack",
  [3157] = "Bad encryption",
}

local FRAME_TYPES = {
  [1] = "ClientHello", [2] = "ServerHello", [3] = "ClientConfirm",
  [4] = "HandshakeError", [5] = "Request", [6] = "Response",
}
local FRAME_CLEAR = { [1] = "ClientHello", [2] = "ServerHello", [4] = "HandshakeError" }
-- Sealed frames and their direction: each direction has its own key and
-- its own nonce counter.
local FRAME_SEALED = { [3] = "c2s", [5] = "c2s", [6] = "s2c" }

---------------------------------------------------------------------------
-- Fields
---------------------------------------------------------------------------

local f = {
  length = ProtoField.uint32("agentlab_tli.length", "Length", base.DEC),
  type = ProtoField.uint8("agentlab_tli.type", "Type", base.DEC, FRAME_TYPES),
  sealed = ProtoField.bytes("agentlab_tli.sealed", "Ciphertext (AES-256-GCM)"),
  tag = ProtoField.bytes("agentlab_tli.tag", "GCM tag"),
  counter = ProtoField.uint64("agentlab_tli.counter", "Nonce counter", base.DEC),
  decryption = ProtoField.string("agentlab_tli.decryption", "Decryption"),
  request = ProtoField.string("agentlab_tli.request", "Request"),
  request_name = ProtoField.string("agentlab_tli.request_name", "Request name"),
  response = ProtoField.string("agentlab_tli.response", "Response"),
  response_in = ProtoField.framenum("agentlab_tli.response_in", "Response in", base.NONE, frametype.RESPONSE),
  request_in = ProtoField.framenum("agentlab_tli.request_in", "Request in", base.NONE, frametype.REQUEST),
  unknown = ProtoField.bytes("agentlab_tli.unknown_field", "Unknown field"),
}

local function snake(name)
  return (name:gsub("(%l)(%u)", "%1_%2"):lower())
end

-- Per message and field: the ProtoField, its kind and what it refers to.
local FIELD = {}
for mname, fields in pairs(MESSAGES) do
  FIELD[mname] = {}
  for _, d in ipairs(fields) do
    local num, name, typ = d[1], d[2], d[3]
    local abbr = "agentlab_tli." .. snake(mname) .. "." .. name
    local label = name .. " (" .. num .. ")"
    local pf, kind
    if MESSAGES[typ] then
      pf, kind = ProtoField.none(abbr, label), "message"
    elseif ENUMS[typ] then
      pf, kind = ProtoField.int32(abbr, label, base.DEC, ENUMS[typ]), "enum"
    elseif typ == "string" then
      pf, kind = ProtoField.string(abbr, label), "string"
    elseif typ == "bytes" then
      pf, kind = ProtoField.bytes(abbr, label), "bytes"
    elseif typ == "bool" then
      pf, kind = ProtoField.bool(abbr, label), "bool"
    elseif typ == "uint32" then
      pf, kind = ProtoField.uint32(abbr, label, base.DEC), "uint32"
    elseif typ == "int32" then
      local names = nil
      if mname == "HandshakeError" and name == "code" then names = HANDSHAKE_CODES end
      pf, kind = ProtoField.int32(abbr, label, base.DEC, names), "int32"
    elseif typ == "uint64" then
      pf, kind = ProtoField.uint64(abbr, label, base.DEC), "uint64"
    elseif typ == "int64" then
      pf, kind = ProtoField.int64(abbr, label, base.DEC), "int64"
    else
      error("agentlab_tli: " .. mname .. "." .. name .. ": unknown type " .. typ)
    end
    FIELD[mname][num] = { pf = pf, kind = kind, name = name, typ = typ, repeated = d.repeated }
    f[mname .. "." .. name] = pf
  end
end

local all_fields = {}
for _, pf in pairs(f) do all_fields[#all_fields + 1] = pf end
tli.fields = all_fields

local ef = {
  malformed = ProtoExpert.new("agentlab_tli.malformed", "Malformed TLI frame", expert.group.MALFORMED, expert.severity.ERROR),
  too_large = ProtoExpert.new("agentlab_tli.too_large", "Frame larger than 1 MiB: the peer closes the connection", expert.group.MALFORMED, expert.severity.ERROR),
  no_key = ProtoExpert.new("agentlab_tli.no_key", "Sealed frame not decrypted", expert.group.DECRYPTION, expert.severity.NOTE),
  bad_tag = ProtoExpert.new("agentlab_tli.bad_tag", "GCM tag does not verify", expert.group.DECRYPTION, expert.severity.ERROR),
  keylog = ProtoExpert.new("agentlab_tli.keylog", "Key log problem", expert.group.DECRYPTION, expert.severity.WARN),
  refused = ProtoExpert.new("agentlab_tli.refused", "Handshake refused", expert.group.RESPONSE_CODE, expert.severity.WARN),
  failed = ProtoExpert.new("agentlab_tli.failed", "Request failed", expert.group.RESPONSE_CODE, expert.severity.NOTE),
  unknown = ProtoExpert.new("agentlab_tli.unknown", "Field not in proto/tli.proto", expert.group.UNDECODED, expert.severity.NOTE),
}
tli.experts = { ef.malformed, ef.too_large, ef.no_key, ef.bad_tag, ef.keylog, ef.refused, ef.failed, ef.unknown }

tli.prefs.keylog = Pref.string("Key log file", "",
  "File written by `smps --keylog FILE` or `agentlab run --keylog FILE`: one line " ..
  "TLI_SESSION <client nonce hex> <c2s key hex> <s2c key hex> per session. It decrypts " ..
  "every request, passwords included.")
tli.prefs.port = Pref.uint("TCP port", DEFAULT_PORT, "Policy Server port to decode as TLI")

---------------------------------------------------------------------------
-- Bytes and words
---------------------------------------------------------------------------

local function tohex(s)
  return (s:gsub(".", function(c) return sformat("%02x", sbyte(c)) end))
end

local function word(s, i) -- big-endian uint32 at 1-based i
  local a, b, c, d = sbyte(s, i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

local function wordbytes(w)
  return schar(rshift(w, 24), band(rshift(w, 16), 255), band(rshift(w, 8), 255), band(w, 255))
end

---------------------------------------------------------------------------
-- AES-256, encryption only (FIPS-197), with T-tables
---------------------------------------------------------------------------

local function xtime(x)
  x = x * 2
  if x >= 256 then x = bxor(x - 256, 0x1b) end
  return x
end

-- The S-box is computed from its definition (the multiplicative inverse
-- in GF(2^8), then the affine map) rather than typed in: 256 typed bytes
-- are 256 chances of a typo that only some keys would reveal.
local SBOX = {}
do
  local function rotl8(x, n) return band(bor(lshift(x, n), rshift(x, 8 - n)), 255) end
  local p, q = 1, 1
  repeat
    p = band(bxor(p, lshift(p, 1), (band(p, 0x80) ~= 0) and 0x1b or 0), 255)
    q = band(bxor(q, lshift(q, 1)), 255)
    q = band(bxor(q, lshift(q, 2)), 255)
    q = band(bxor(q, lshift(q, 4)), 255)
    if band(q, 0x80) ~= 0 then q = bxor(q, 0x09) end
    SBOX[p] = bxor(q, rotl8(q, 1), rotl8(q, 2), rotl8(q, 3), rotl8(q, 4), 0x63)
  until p == 1
  SBOX[0] = 0x63
end

local TE0, TE1, TE2, TE3 = {}, {}, {}, {}
for x = 0, 255 do
  local s = SBOX[x]
  local s2 = xtime(s)
  local t = bor(lshift(s2, 24), lshift(s, 16), lshift(s, 8), bxor(s2, s))
  TE0[x], TE1[x], TE2[x], TE3[x] = t, rrotate(t, 8), rrotate(t, 16), rrotate(t, 24)
end

local function sub_word(w)
  return bor(lshift(SBOX[rshift(w, 24)], 24), lshift(SBOX[band(rshift(w, 16), 255)], 16),
    lshift(SBOX[band(rshift(w, 8), 255)], 8), SBOX[band(w, 255)])
end

local function expand_key(key) -- 32-byte string -> 60 round-key words (0-based)
  local w = {}
  for i = 0, 7 do w[i] = word(key, 4 * i + 1) end
  local rcon = 1
  for i = 8, 59 do
    local t = w[i - 1]
    if i % 8 == 0 then
      t = bxor(sub_word(lrotate(t, 8)), lshift(rcon, 24))
      rcon = xtime(rcon)
    elseif i % 8 == 4 then
      t = sub_word(t)
    end
    w[i] = bxor(w[i - 8], t)
  end
  return w
end

local function encrypt_block(w, s0, s1, s2, s3)
  s0, s1, s2, s3 = bxor(s0, w[0]), bxor(s1, w[1]), bxor(s2, w[2]), bxor(s3, w[3])
  for r = 4, 52, 4 do
    s0, s1, s2, s3 =
      bxor(TE0[rshift(s0, 24)], TE1[band(rshift(s1, 16), 255)], TE2[band(rshift(s2, 8), 255)], TE3[band(s3, 255)], w[r]),
      bxor(TE0[rshift(s1, 24)], TE1[band(rshift(s2, 16), 255)], TE2[band(rshift(s3, 8), 255)], TE3[band(s0, 255)], w[r + 1]),
      bxor(TE0[rshift(s2, 24)], TE1[band(rshift(s3, 16), 255)], TE2[band(rshift(s0, 8), 255)], TE3[band(s1, 255)], w[r + 2]),
      bxor(TE0[rshift(s3, 24)], TE1[band(rshift(s0, 16), 255)], TE2[band(rshift(s1, 8), 255)], TE3[band(s2, 255)], w[r + 3])
  end
  local function last(a, b, c, d, k)
    return bxor(bor(lshift(SBOX[rshift(a, 24)], 24), lshift(SBOX[band(rshift(b, 16), 255)], 16),
      lshift(SBOX[band(rshift(c, 8), 255)], 8), SBOX[band(d, 255)]), k)
  end
  return last(s0, s1, s2, s3, w[56]), last(s1, s2, s3, s0, w[57]), last(s2, s3, s0, s1, w[58]), last(s3, s0, s1, s2, w[59])
end

---------------------------------------------------------------------------
-- GCM (NIST SP 800-38D) with a 96-bit nonce
---------------------------------------------------------------------------

-- The multiplication by H walks H's successive halvings, which depend on
-- H alone: they are computed once per key, and each product is then a
-- XOR of the ones the other factor's bits select.
local function ghash_table(h0, h1, h2, h3)
  local t = {}
  for i = 0, 127 do
    t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3] = h0, h1, h2, h3
    local lsb = band(h3, 1)
    h3 = bor(rshift(h3, 1), lshift(band(h2, 1), 31))
    h2 = bor(rshift(h2, 1), lshift(band(h1, 1), 31))
    h1 = bor(rshift(h1, 1), lshift(band(h0, 1), 31))
    h0 = rshift(h0, 1)
    if lsb == 1 then h0 = bxor(h0, 0xe1000000) end
  end
  return t
end

local function gmul(t, x0, x1, x2, x3)
  local z0, z1, z2, z3 = 0, 0, 0, 0
  local xs = { x0, x1, x2, x3 }
  for j = 1, 4 do
    local x, i = xs[j], (j - 1) * 128
    while x ~= 0 do
      if x >= 2147483648 then
        z0, z1, z2, z3 = bxor(z0, t[i]), bxor(z1, t[i + 1]), bxor(z2, t[i + 2]), bxor(z3, t[i + 3])
        x = x - 2147483648
      end
      x, i = x * 2, i + 4
    end
  end
  return z0, z1, z2, z3
end

-- ghash over aad and ciphertext, each zero-padded to a block, then their
-- bit lengths.
local function ghash(t, aad, ct)
  local y0, y1, y2, y3 = 0, 0, 0, 0
  local function absorb(s)
    for i = 1, #s, 16 do
      local blk = s:sub(i, i + 15)
      if #blk < 16 then blk = blk .. string.rep("\0", 16 - #blk) end
      y0, y1, y2, y3 = gmul(t, bxor(y0, word(blk, 1)), bxor(y1, word(blk, 5)), bxor(y2, word(blk, 9)), bxor(y3, word(blk, 13)))
    end
  end
  absorb(aad)
  absorb(ct)
  local abits, cbits = #aad * 8, #ct * 8
  y0, y1, y2, y3 = gmul(t, bxor(y0, math.floor(abits / 4294967296)), bxor(y1, abits % 4294967296),
    bxor(y2, math.floor(cbits / 4294967296)), bxor(y3, cbits % 4294967296))
  return y0, y1, y2, y3
end

local function new_gcm_key(key)
  local w = expand_key(key)
  return { w = w, h = ghash_table(encrypt_block(w, 0, 0, 0, 0)) }
end

-- The tag for each candidate counter costs one block; GHASH is the same
-- for all of them.
local function gcm_tag(k, n1, n2, s0, s1, s2, s3)
  local e0, e1, e2, e3 = encrypt_block(k.w, 0, n1, n2, 1)
  return wordbytes(bxor(e0, s0)) .. wordbytes(bxor(e1, s1)) .. wordbytes(bxor(e2, s2)) .. wordbytes(bxor(e3, s3))
end

local function ctr_decrypt(k, n1, n2, ct)
  local out, ctr = {}, 2
  for i = 1, #ct, 16 do
    local k0, k1, k2, k3 = encrypt_block(k.w, 0, n1, n2, ctr)
    local ks = wordbytes(k0) .. wordbytes(k1) .. wordbytes(k2) .. wordbytes(k3)
    local blk = ct:sub(i, i + 15)
    local p = {}
    for j = 1, #blk do p[j] = schar(bxor(sbyte(blk, j), sbyte(ks, j))) end
    out[#out + 1] = table.concat(p)
    ctr = (ctr + 1) % 4294967296
  end
  return table.concat(out)
end

-- The nonce is tli's: 4 zero bytes, then the frame's 64-bit counter in
-- its direction; the additional data is the frame type byte.
local function split_counter(c)
  return math.floor(c / 4294967296), c % 4294967296
end

-- Finds the counter whose tag verifies, from the expected one on: a frame
-- the capture missed moves the counter on without us.
local RESYNC = 64
local function gcm_open(k, expected, typ, ct, tag)
  local s0, s1, s2, s3 = ghash(k.h, schar(typ), ct)
  for c = expected, expected + RESYNC do
    local n1, n2 = split_counter(c)
    if gcm_tag(k, n1, n2, s0, s1, s2, s3) == tag then
      return ctr_decrypt(k, n1, n2, ct), c
    end
  end
  return nil, nil
end

---------------------------------------------------------------------------
-- The key log
---------------------------------------------------------------------------

local keylog = { path = nil, size = nil, keys = {}, problems = {} }

local function parse_keylog_line(line)
  local fields = {}
  for w in line:gmatch("%S+") do fields[#fields + 1] = w end
  if fields[1] ~= KEYLOG_LABEL then
    return nil, "want a line \"" .. KEYLOG_LABEL .. " <client nonce hex> <c2s key hex> <s2c key hex>\", got \"" .. line:sub(1, 80) .. "\""
  end
  if #fields ~= 4 then
    return nil, sformat("%s has %d fields, want 3 (client nonce, client-to-server key, server-to-client key)", KEYLOG_LABEL, #fields - 1)
  end
  local out = {}
  for i, what in ipairs({ "client nonce", "client-to-server key", "server-to-client key" }) do
    local h = fields[i + 1]
    if h:find("[^%x]") or #h % 2 ~= 0 then
      return nil, sformat("%s \"%s\" is not hex", what, h:sub(1, 80))
    end
    local n = #h / 2
    if i == 1 and n < 16 then
      return nil, sformat("client nonce is %d bytes, want at least 16", n)
    elseif i > 1 and n ~= 32 then
      return nil, sformat("%s is %d bytes, want 32", what, n)
    end
    out[i] = h:lower()
  end
  return out
end

local function unhex(h)
  return (h:gsub("%x%x", function(x) return schar(tonumber(x, 16)) end))
end

-- load_keylog reads the file again whenever its size changes, so that a
-- capture opened while the lab still runs finds the sessions logged later.
local function load_keylog()
  local path = tli.prefs.keylog
  if path == "" then
    keylog = { path = "", keys = {}, problems = {} }
    return
  end
  local fh, err = io.open(path, "rb")
  if not fh then
    if keylog.path ~= path or keylog.open_err ~= err then
      keylog = { path = path, keys = {}, problems = { "cannot open: " .. err }, open_err = err }
      report_failure("agentlab_tli: key log " .. err)
    end
    return
  end
  local size = fh:seek("end")
  if keylog.path == path and keylog.size == size then
    fh:close()
    return
  end
  fh:seek("set")
  local keys, problems, n = {}, {}, 0
  for line in fh:lines() do
    n = n + 1
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" and line:sub(1, 1) ~= "#" then
      local e, perr = parse_keylog_line(line)
      if not e then
        problems[#problems + 1] = sformat("%s:%d: %s", path, n, perr)
      elseif keys[e[1]] and (keys[e[1]].c2s_hex ~= e[2] or keys[e[1]].s2c_hex ~= e[3]) then
        problems[#problems + 1] = sformat("%s:%d: client nonce %s has other keys than on an earlier line", path, n, e[1])
      elseif not keys[e[1]] then
        keys[e[1]] = { c2s_hex = e[2], s2c_hex = e[3] }
      end
    end
  end
  fh:close()
  keylog = { path = path, size = size, keys = keys, problems = problems }
  if #problems > 0 then
    report_failure("agentlab_tli: " .. table.concat(problems, "\n"))
  end
end

-- lookup_keys returns the session's GCM keys, or nil and why not.
local function lookup_keys(nonce_hex)
  load_keylog()
  if keylog.path == "" then
    return nil, "no key log (preference agentlab_tli.keylog)"
  end
  local e = keylog.keys[nonce_hex]
  if not e then
    if keylog.open_err then
      return nil, "key log " .. keylog.open_err
    end
    return nil, "client nonce " .. nonce_hex .. " not in key log " .. keylog.path
  end
  if not e.c2s then
    e.c2s, e.s2c = new_gcm_key(unhex(e.c2s_hex)), new_gcm_key(unhex(e.s2c_hex))
  end
  return e
end

---------------------------------------------------------------------------
-- Protobuf: varints and length-delimited fields, as tli.proto needs
---------------------------------------------------------------------------

-- read_varint returns the value as two 32-bit halves and the next position.
local function read_varint(s, pos, limit)
  local lo, hi, shift = 0, 0, 0
  while true do
    if pos > limit then return nil, nil, nil, "truncated varint" end
    if shift > 63 then return nil, nil, nil, "varint longer than 10 bytes" end
    local b = sbyte(s, pos)
    pos = pos + 1
    local v = b % 128
    if shift < 28 then
      lo = lo + v * 2 ^ shift
    elseif shift == 28 then
      lo = lo + (v % 16) * 2 ^ 28
      hi = hi + math.floor(v / 16)
    else
      hi = (hi + v * 2 ^ (shift - 32)) % 4294967296
    end
    if b < 128 then return lo, hi, pos end
    shift = shift + 7
  end
end

local WIRE_NAMES = { [0] = "varint", [1] = "64-bit", [2] = "length-delimited", [5] = "32-bit" }

local function want_wire(kind)
  if kind == "string" or kind == "bytes" or kind == "message" then return 2 end
  return 0
end

local function int32_of(lo)
  if lo >= 2147483648 then return lo - 4294967296 end
  return lo
end

-- decode adds message mname, held in tvb at [off, off+len), to tree, and
-- returns its values by field name (repeated fields as lists) and the
-- first problem found, if any. Unknown fields are shown and skipped, as a
-- protobuf reader does; a field cut short ends the message.
local decode
decode = function(mname, tvb, off, len, tree)
  local s = tvb:raw(off, len)
  local vals, pos, limit = {}, 1, len
  local schema = FIELD[mname]
  while pos <= limit do
    local start = pos
    local klo, khi, npos, err = read_varint(s, pos, limit)
    if not klo then
      tree:add_proto_expert_info(ef.malformed, mname .. ": " .. err .. " in a field key at byte " .. (pos - 1))
      return vals, err
    end
    pos = npos
    local num, wt = math.floor((khi * 4294967296 + klo) / 8), klo % 8
    local d = schema[num]
    local vlo, vhi, vstart, vlen
    if wt == 0 then
      vlo, vhi, npos, err = read_varint(s, pos, limit)
      if not vlo then
        tree:add_proto_expert_info(ef.malformed, sformat("%s field %d: %s", mname, num, err))
        return vals, err
      end
      vstart, vlen, pos = pos, npos - pos, npos
    elseif wt == 2 then
      local llo, lhi
      llo, lhi, npos, err = read_varint(s, pos, limit)
      if not llo then
        tree:add_proto_expert_info(ef.malformed, sformat("%s field %d: %s in its length", mname, num, err))
        return vals, err
      end
      if lhi ~= 0 or npos + llo - 1 > limit then
        err = sformat("%s field %d: length %d runs past the end of the message (%d bytes left)", mname, num, lhi * 4294967296 + llo, limit - npos + 1)
        tree:add_proto_expert_info(ef.malformed, err)
        return vals, err
      end
      vstart, vlen, pos = npos, llo, npos + llo
    elseif wt == 1 or wt == 5 then
      local n = (wt == 1) and 8 or 4
      if pos + n - 1 > limit then
        err = sformat("%s field %d: %d-byte value cut short", mname, num, n)
        tree:add_proto_expert_info(ef.malformed, err)
        return vals, err
      end
      vstart, vlen, pos = pos, n, pos + n
    else
      err = sformat("%s field %d: wire type %d (groups are not proto3)", mname, num, wt)
      tree:add_proto_expert_info(ef.malformed, err)
      return vals, err
    end
    local range = tvb(off + start - 1, pos - start)
    local vrange = tvb(off + vstart - 1, vlen)
    if not d or want_wire(d.kind) ~= wt then
      local item = tree:add(f.unknown, range)
      if d then
        item:set_text(sformat("%s (%d): wire type %s, want %s", d.name, num, WIRE_NAMES[wt], WIRE_NAMES[want_wire(d.kind)]))
        item:add_proto_expert_info(ef.malformed, sformat("%s.%s has the wrong wire type", mname, d.name))
      else
        item:set_text(sformat("Unknown field %d (%s)", num, WIRE_NAMES[wt]))
        item:add_proto_expert_info(ef.unknown)
      end
    else
      local v
      if d.kind == "message" then
        local sub = tree:add(d.pf, range)
        sub:set_text(sformat("%s (%d): %s", d.name, num, d.typ))
        local subvals, suberr = decode(d.typ, tvb, off + vstart - 1, vlen, sub)
        v = subvals
        if suberr then
          err = suberr
        end
      elseif d.kind == "string" then
        v = s:sub(vstart, vstart + vlen - 1)
        tree:add(d.pf, vrange, v)
      elseif d.kind == "bytes" then
        v = s:sub(vstart, vstart + vlen - 1)
        if vlen > 0 then
          tree:add(d.pf, vrange)
        else
          tree:add(d.pf, vrange, ByteArray.new())
        end
      elseif d.kind == "bool" then
        v = (vlo ~= 0 or vhi ~= 0)
        tree:add(d.pf, vrange, v and 1 or 0)
      elseif d.kind == "uint32" then
        v = vlo
        tree:add(d.pf, vrange, v)
      elseif d.kind == "int32" or d.kind == "enum" then
        v = int32_of(vlo)
        tree:add(d.pf, vrange, v)
      elseif d.kind == "uint64" then
        v = vhi * 4294967296 + vlo
        tree:add(d.pf, vrange, UInt64.new(vlo, vhi))
      elseif d.kind == "int64" then
        v = (vhi >= 2147483648) and -((4294967295 - vhi) * 4294967296 + (4294967296 - vlo)) or vhi * 4294967296 + vlo
        tree:add(d.pf, vrange, Int64.new(vlo, vhi))
      end
      if d.repeated then
        vals[d.name] = vals[d.name] or {}
        table.insert(vals[d.name], v)
      else
        vals[d.name] = v
      end
      if err then return vals, err end
    end
  end
  return vals, nil
end

---------------------------------------------------------------------------
-- Naming requests and responses as tli.Describe does in the traces
---------------------------------------------------------------------------

local REQUEST_NAMES = {
  get_host_config = "GetHostConfig", get_agent_config = "GetAgentConfig", set_agent_info = "SetAgentInfo",
  is_protected = "IsProtected", login = "Login", authorize = "Authorize", logout = "Logout",
  do_management = "DoManagement", register_host = "RegisterHost", queue_management = "QueueManagement",
}

local function str(v) return v or "" end

local function describe(req)
  local b
  if req.get_host_config then return "GetHostConfig", "GetHostConfig " .. str(req.get_host_config.name) end
  if req.get_agent_config then return "GetAgentConfig", "GetAgentConfig " .. str(req.get_agent_config.name) end
  if req.set_agent_info then return "SetAgentInfo", "SetAgentInfo " .. str(req.set_agent_info.agent_name) end
  b = req.is_protected
  if b then return "IsProtected", "IsProtected " .. str(b.action) .. " " .. str(b.resource) end
  b = req.login
  if b then return "Login", "Login " .. str(b.user) .. " realm " .. str(b.realm) end
  b = req.authorize
  if b then return "Authorize", "Authorize " .. str(b.action) .. " " .. str(b.resource) end
  if req.logout then return "Logout", "Logout" end
  if req.do_management then return "DoManagement", "DoManagement " .. str(req.do_management.command) end
  if req.register_host then return "RegisterHost", "RegisterHost " .. str(req.register_host.trusted_host) end
  b = req.queue_management
  if b then return "QueueManagement", "QueueManagement " .. str(b.command and b.command.name) end
  return "empty request", "empty request"
end

local function describe_response(reqdesc, resp)
  local result = resp.result or 0
  local s = reqdesc .. ": " .. (ENUMS.Result[result] or tostring(result))
  if resp.host_config then
    local n = resp.host_config.policy_servers and #resp.host_config.policy_servers or 0
    s = s .. sformat(" (HCO %s, %d servers)", str(resp.host_config.name), n)
  elseif resp.agent_config then
    s = s .. " (ACO " .. str(resp.agent_config.name) .. ")"
  elseif resp.do_management then
    local n = resp.do_management.commands and #resp.do_management.commands or 0
    s = s .. sformat(" (%d commands)", n)
  end
  if resp.message and resp.message ~= "" and result ~= 0 and result ~= 1 then
    s = s .. " - " .. resp.message
  end
  return s
end

---------------------------------------------------------------------------
-- Connections
---------------------------------------------------------------------------

-- sessions holds, per TCP stream, what the clear handshake said and where
-- each direction's nonce counter stands. A sealed frame's counter is fixed
-- the first time it is seen (capture order), keyed by its GCM tag, so that
-- Wireshark may dissect it again later in any order.
local sessions = {}
local tcp_stream = Field.new("tcp.stream")

function tli.init()
  sessions = {}
  keylog = { path = nil, size = nil, keys = {}, problems = {} }
end

local function session_of(create)
  local ids = { tcp_stream() }
  local id = ids[#ids]
  if not id then return nil end
  id = id.value
  local s = sessions[id]
  if not s and create then
    s = { next = { c2s = 0, s2c = 0 }, frames = {}, requests = {} }
    sessions[id] = s
  end
  return s
end

local function info(pinfo, text)
  if tostring(pinfo.cols.protocol) ~= "TLI" then
    pinfo.cols.protocol = "TLI"
    pinfo.cols.info = text
  else
    pinfo.cols.info:append(" | " .. text)
  end
end

local function dissect_clear(typ, tvb, pinfo, ftree, plen)
  local mname = FRAME_CLEAR[typ]
  local vals = decode(mname, tvb, HEADER, plen, ftree)
  if typ == 1 then
    local s = session_of(true)
    if s and vals.client_nonce and not s.nonce_hex then
      s.nonce_hex = tohex(vals.client_nonce)
    end
    local who = "trusted host " .. str(vals.trusted_host)
    if vals.mode == 1 then
      who = "administrator session"
      if str(vals.trusted_host) ~= "" then who = who .. " for " .. vals.trusted_host end
    end
    local text = "ClientHello " .. who
    if vals.version and vals.version ~= 1 then text = text .. sformat(" version %d", vals.version) end
    return text
  elseif typ == 2 then
    return "ServerHello from " .. str(vals.server_name)
  else
    local code = vals.code or 0
    local text = sformat("HandshakeError %d %s", code, HANDSHAKE_CODES[code] or str(vals.message))
    ftree:add_proto_expert_info(ef.refused, text)
    return text
  end
end

local function dissect_sealed(typ, tvb, pinfo, ftree, plen)
  local name = FRAME_TYPES[typ]
  if plen < TAG_LEN then
    ftree:add_proto_expert_info(ef.malformed, sformat("sealed payload of %d bytes is shorter than a GCM tag", plen))
    return name .. " (malformed)"
  end
  local ctlen = plen - TAG_LEN
  ftree:add(f.sealed, tvb(HEADER, ctlen))
  ftree:add(f.tag, tvb(HEADER + ctlen, TAG_LEN))
  local s = session_of(false)
  local why
  if not s or not s.nonce_hex then
    why = "no ClientHello for this connection in the capture"
  end
  local keys
  if not why then keys, why = lookup_keys(s.nonce_hex) end
  if not keys then
    local item = ftree:add(f.decryption, why)
    item:add_proto_expert_info(ef.no_key, "Not decrypted: " .. why)
    -- A bad line may be the one this session needed.
    if keylog.problems and #keylog.problems > 0 then
      item:add_proto_expert_info(ef.keylog, keylog.problems[1])
    end
    return name .. " (encrypted)"
  end
  local dir = FRAME_SEALED[typ]
  local tag = tvb:raw(HEADER + ctlen, TAG_LEN)
  local rec = s.frames[dir .. tag]
  if not rec then
    local plain, counter = gcm_open(keys[dir], s.next[dir], typ, tvb:raw(HEADER, ctlen), tag)
    rec = { plain = plain, counter = counter, tried = s.next[dir] }
    if counter then s.next[dir] = counter + 1 end
    s.frames[dir .. tag] = rec
  end
  if not rec.plain then
    ftree:add(f.decryption, sformat("GCM tag does not verify at nonce counters %d to %d", rec.tried, rec.tried + RESYNC))
      :add_proto_expert_info(ef.bad_tag, "The logged key does not open this frame")
    return name .. " (does not decrypt)"
  end
  ftree:add(f.decryption, "decrypted, GCM tag verified")
  ftree:add(f.counter, tvb(HEADER + ctlen, TAG_LEN), UInt64.new(rec.counter % 4294967296, math.floor(rec.counter / 4294967296)))
    :set_generated()
  local dtvb = ByteArray.new(rec.plain, true):tvb("Decrypted " .. name)
  local sub = ftree:add(tli, dtvb(), name .. " (decrypted)")
  if typ == 3 then
    decode("ClientConfirm", dtvb, 0, dtvb:len(), sub)
    return "ClientConfirm"
  end
  local vals = decode(name, dtvb, 0, dtvb:len(), sub)
  local id = vals.id or 0
  if typ == 5 then
    local short, text = describe(vals)
    local r = s.requests[id]
    if not r or r.frame == pinfo.number then
      r = r or { frame = pinfo.number }
      r.text, r.short = text, short
      s.requests[id] = r
    end
    ftree:add(f.request, dtvb(), text):set_generated()
    ftree:add(f.request_name, dtvb(), short):set_generated()
    if r.response then ftree:add(f.response_in, r.response):set_generated() end
    return "Request " .. text
  end
  local r = s.requests[id]
  local reqdesc = "unseen request " .. id
  if r then
    reqdesc = r.text
    if not r.response then r.response = pinfo.number end
    ftree:add(f.request_in, r.frame):set_generated()
    ftree:add(f.request_name, dtvb(), r.short):set_generated()
  end
  local text = describe_response(reqdesc, vals)
  ftree:add(f.response, dtvb(), text):set_generated()
  if vals.result and vals.result < 0 then
    ftree:add_proto_expert_info(ef.failed, text)
  end
  return "Response " .. text
end

local function dissect_frame(tvb, pinfo, tree)
  local plen = tvb(0, 4):uint()
  local typ = tvb(4, 1):uint()
  local ftree = tree:add(tli, tvb(), "agentlab TLI, " .. (FRAME_TYPES[typ] or ("unknown type " .. typ)))
  ftree:add(f.length, tvb(0, 4))
  ftree:add(f.type, tvb(4, 1))
  local text
  if plen > MAX_FRAME then
    ftree:add_proto_expert_info(ef.too_large, sformat("length %d is over 1 MiB (%d)", plen, MAX_FRAME))
    text = sformat("%s, length %d over 1 MiB", FRAME_TYPES[typ] or "frame", plen)
  elseif FRAME_CLEAR[typ] then
    text = dissect_clear(typ, tvb, pinfo, ftree, plen)
  elseif FRAME_SEALED[typ] then
    text = dissect_sealed(typ, tvb, pinfo, ftree, plen)
  else
    ftree:add_proto_expert_info(ef.malformed, sformat("unknown frame type %d", typ))
    text = sformat("unknown frame type %d", typ)
  end
  ftree:append_text(": " .. text)
  info(pinfo, text)
  return tvb:len()
end

-- A frame over 1 MiB is not reassembled: the real peer closes on the
-- length word, and waiting for a megabyte of garbage would only hide that.
local function frame_len(tvb, pinfo, offset)
  local n = tvb(offset, 4):uint()
  if n > MAX_FRAME then
    return tvb:len() - offset
  end
  return HEADER + n
end

function tli.dissector(tvb, pinfo, tree)
  return dissect_tcp_pdus(tvb, tree, HEADER, frame_len, dissect_frame, true)
end

local registered_port = nil
local function register_port()
  local t = DissectorTable.get("tcp.port")
  if registered_port then t:remove(registered_port, tli) end
  registered_port = tli.prefs.port
  t:add(registered_port, tli)
end

function tli.prefs_changed()
  if registered_port ~= tli.prefs.port then register_port() end
  keylog = { path = nil, size = nil, keys = {}, problems = {} }
end

register_port()
