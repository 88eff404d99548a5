// Shared by solana_test.mjs and kit_bench.mjs: @solana/kit transactions from
// plain case descriptions (the same descriptions thorp builds in solana_cases.lua).
import {
  address, AccountRole, appendTransactionMessageInstructions, compileTransaction,
  compressTransactionMessageUsingAddressLookupTables, createKeyPairFromPrivateKeyBytes, createTransactionMessage,
  getAddressDecoder, getAddressEncoder, getBase64EncodedWireTransaction, getProgramDerivedAddress, pipe,
  setTransactionMessageFeePayer, setTransactionMessageLifetimeUsingBlockhash, signTransaction,
  getAddressFromPublicKey,
} from "@solana/kit";

export const SYSTEM = "11111111111111111111111111111111";
export const COMPUTE_BUDGET = "ComputeBudget111111111111111111111111111111";
export const TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
export const ATA_PROGRAM = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL";
export const MEMO = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr";

const addrEnc = getAddressEncoder(), addrDec = getAddressDecoder();
export const toAddress = (bytes) => addrDec.decode(Uint8Array.from(bytes));
export const hex = (u8) => Buffer.from(u8).toString("hex");
const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return [...b]; };
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return [...b]; };
const R = AccountRole;

export async function ata(owner, mint, tokenProgram = TOKEN) {
  const [pda] = await getProgramDerivedAddress({ programAddress: address(ATA_PROGRAM),
    seeds: [addrEnc.encode(address(owner)), addrEnc.encode(address(tokenProgram)), addrEnc.encode(address(mint))] });
  return pda;
}

// The instruction layouts, written out by hand from the programs' docs (thorp uses its builders).
export async function kitInstruction(ix) {
  const acc = (a, role) => ({ address: address(a), role });
  switch (ix.b) {
    case "transfer": return { programAddress: address(SYSTEM), accounts: [acc(ix.from, R.WRITABLE_SIGNER), acc(ix.to, R.WRITABLE)],
      data: Uint8Array.from([...u32(2), ...u64(ix.lamports)]) };
    case "limit": return { programAddress: address(COMPUTE_BUDGET), data: Uint8Array.from([2, ...u32(ix.units)]) };
    case "price": return { programAddress: address(COMPUTE_BUDGET), data: Uint8Array.from([3, ...u64(ix.micro_lamports)]) };
    case "transfer_checked": return { programAddress: address(TOKEN), accounts: [acc(ix.source, R.WRITABLE),
      acc(ix.mint, R.READONLY), acc(ix.destination, R.WRITABLE), acc(ix.owner, R.READONLY_SIGNER)],
      data: Uint8Array.from([12, ...u64(ix.amount), ix.decimals]) };
    case "create_ata": return { programAddress: address(ATA_PROGRAM), accounts: [acc(ix.payer, R.WRITABLE_SIGNER),
      acc(await ata(ix.owner, ix.mint), R.WRITABLE), acc(ix.owner, R.READONLY), acc(ix.mint, R.READONLY),
      acc(SYSTEM, R.READONLY), acc(TOKEN, R.READONLY)], data: Uint8Array.from([1]) };
    case "memo": return { programAddress: address(MEMO), accounts: (ix.signers || []).map((s) => acc(s, R.READONLY_SIGNER)),
      data: new TextEncoder().encode(ix.text) };
    default: throw new Error(`unknown instruction ${ix.b}`);
  }
}

export async function keyPair(seedHex) {
  const kp = await createKeyPairFromPrivateKeyBytes(Buffer.from(seedHex, "hex"));
  return { kp, address: await getAddressFromPublicKey(kp.publicKey) };
}

// c: { version, payer (seed hex), signers (seed hexes, payer first), blockhash, instructions, lookup_tables }
export async function kitWire(c, keyPairs) {
  const ixs = [];
  for (const ix of c.instructions) ixs.push(await kitInstruction(ix));
  let m = pipe(createTransactionMessage({ version: c.version === "legacy" ? "legacy" : 0 }),
    (m) => setTransactionMessageFeePayer(address(c.fee_payer), m),
    (m) => setTransactionMessageLifetimeUsingBlockhash({ blockhash: c.blockhash, lastValidBlockHeight: 1000n }, m),
    (m) => appendTransactionMessageInstructions(ixs, m));
  if (c.lookup_tables) {
    const tables = {};
    for (const t of c.lookup_tables) tables[t.key] = t.addresses.map((a) => address(a));
    m = compressTransactionMessageUsingAddressLookupTables(m, tables);
  }
  const tx = await signTransaction(keyPairs, compileTransaction(m));
  return getBase64EncodedWireTransaction(tx);
}
