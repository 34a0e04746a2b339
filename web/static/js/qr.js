// A self-contained QR Code encoder (ISO/IEC 18004): byte mode, versions 1–10, error correction
// levels L/M/Q/H, automatic mask choice by the standard's penalty rules. Enough for share links
// (up to 213 bytes at level M) without any external service or build step.

const ECC_CODEWORDS_PER_BLOCK = {
  L: [7, 10, 15, 20, 26, 18, 20, 24, 30, 18],
  M: [10, 16, 26, 18, 24, 16, 18, 22, 22, 26],
  Q: [13, 22, 18, 26, 18, 24, 18, 22, 20, 24],
  H: [17, 28, 22, 16, 22, 28, 26, 26, 24, 28],
};
const ERROR_CORRECTION_BLOCKS = {
  L: [1, 1, 1, 1, 1, 2, 2, 2, 2, 4],
  M: [1, 1, 1, 2, 2, 4, 4, 4, 5, 5],
  Q: [1, 1, 2, 2, 4, 4, 6, 6, 8, 8],
  H: [1, 1, 2, 4, 4, 4, 5, 6, 8, 8],
};
const FORMAT_ECL_BITS = { L: 1, M: 0, Q: 3, H: 2 };
export const MAX_VERSION = 10;

// --- Reed–Solomon over GF(256) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 ---

function gfMultiply(x, y) {
  let z = 0;
  for (let i = 7; i >= 0; i--) {
    z = (z << 1) ^ ((z >>> 7) * 0x11d);
    z ^= ((y >>> i) & 1) * x;
  }
  return z & 0xff;
}

function rsDivisor(degree) {
  // coefficients of (x - r^0)(x - r^1)…(x - r^{degree-1}), highest power first, leading 1 dropped
  const result = new Array(degree).fill(0);
  result[degree - 1] = 1;
  let root = 1;
  for (let i = 0; i < degree; i++) {
    for (let j = 0; j < result.length; j++) {
      result[j] = gfMultiply(result[j], root);
      if (j + 1 < result.length) result[j] ^= result[j + 1];
    }
    root = gfMultiply(root, 0x02);
  }
  return result;
}

function rsRemainder(data, divisor) {
  const result = new Array(divisor.length).fill(0);
  for (const byte of data) {
    const factor = byte ^ result.shift();
    result.push(0);
    divisor.forEach((coef, i) => {
      result[i] ^= gfMultiply(coef, factor);
    });
  }
  return result;
}

// --- capacities ---

function rawDataModules(version) {
  let result = (16 * version + 128) * version + 64;
  if (version >= 2) {
    const align = Math.floor(version / 7) + 2;
    result -= (25 * align - 10) * align - 55;
    if (version >= 7) result -= 36;
  }
  return result;
}

function dataCodewords(version, ecl) {
  const v = version - 1;
  return (
    Math.floor(rawDataModules(version) / 8) -
    ECC_CODEWORDS_PER_BLOCK[ecl][v] * ERROR_CORRECTION_BLOCKS[ecl][v]
  );
}

function alignmentPositions(version) {
  if (version === 1) return [];
  const count = Math.floor(version / 7) + 2;
  const step = Math.floor((version * 8 + count * 3 + 5) / (count * 4 - 4)) * 2;
  const result = [6];
  for (let pos = version * 4 + 10; result.length < count; pos -= step) result.splice(1, 0, pos);
  return result;
}

// --- data encoding ---

function utf8(text) {
  return Array.from(new TextEncoder().encode(text));
}

function encodeData(bytes, version, ecl) {
  const bits = [];
  const push = (value, length) => {
    for (let i = length - 1; i >= 0; i--) bits.push((value >>> i) & 1);
  };
  push(0b0100, 4); // byte mode
  push(bytes.length, version <= 9 ? 8 : 16);
  for (const b of bytes) push(b, 8);
  const capacityBits = dataCodewords(version, ecl) * 8;
  push(0, Math.min(4, capacityBits - bits.length)); // terminator
  push(0, (8 - (bits.length % 8)) % 8);
  for (let pad = 0xec; bits.length < capacityBits; pad ^= 0xec ^ 0x11) push(pad, 8);
  const codewords = [];
  for (let i = 0; i < bits.length; i += 8) {
    codewords.push(bits.slice(i, i + 8).reduce((acc, bit) => (acc << 1) | bit, 0));
  }
  return codewords;
}

function withErrorCorrection(data, version, ecl) {
  const v = version - 1;
  const blockCount = ERROR_CORRECTION_BLOCKS[ecl][v];
  const eccLength = ECC_CODEWORDS_PER_BLOCK[ecl][v];
  const rawCodewords = Math.floor(rawDataModules(version) / 8);
  const shortBlocks = blockCount - (rawCodewords % blockCount);
  const shortLength = Math.floor(rawCodewords / blockCount);
  const divisor = rsDivisor(eccLength);
  const blocks = [];
  for (let i = 0, k = 0; i < blockCount; i++) {
    const dataLength = shortLength - eccLength + (i < shortBlocks ? 0 : 1);
    const chunk = data.slice(k, k + dataLength);
    k += dataLength;
    const ecc = rsRemainder(chunk, divisor);
    if (i < shortBlocks) chunk.push(null); // keeps columns aligned while interleaving
    blocks.push(chunk.concat(ecc));
  }
  const result = [];
  for (let i = 0; i < blocks[0].length; i++) {
    for (const block of blocks) if (block[i] !== null) result.push(block[i]);
  }
  return result;
}

// --- the matrix ---

class Matrix {
  constructor(version) {
    this.version = version;
    this.size = version * 4 + 17;
    this.dark = Array.from({ length: this.size }, () => new Array(this.size).fill(false));
    this.reserved = Array.from({ length: this.size }, () => new Array(this.size).fill(false));
  }

  set(x, y, dark) {
    this.dark[y][x] = dark;
    this.reserved[y][x] = true;
  }

  drawFunctionPatterns() {
    const size = this.size;
    for (let i = 0; i < size; i++) {
      this.set(6, i, i % 2 === 0);
      this.set(i, 6, i % 2 === 0);
    }
    this.drawFinder(3, 3);
    this.drawFinder(size - 4, 3);
    this.drawFinder(3, size - 4);
    const positions = alignmentPositions(this.version);
    const last = positions.length - 1;
    positions.forEach((x, i) => {
      positions.forEach((y, j) => {
        const nearFinder = (i === 0 && j === 0) || (i === 0 && j === last) || (i === last && j === 0);
        if (!nearFinder) this.drawAlignment(x, y);
      });
    });
    this.drawFormat(0); // reserve; real bits drawn once the mask is known
    this.drawVersion();
  }

  drawFinder(cx, cy) {
    for (let dy = -4; dy <= 4; dy++) {
      for (let dx = -4; dx <= 4; dx++) {
        const x = cx + dx;
        const y = cy + dy;
        if (x < 0 || y < 0 || x >= this.size || y >= this.size) continue;
        const distance = Math.max(Math.abs(dx), Math.abs(dy));
        this.set(x, y, distance !== 2 && distance !== 4);
      }
    }
  }

  drawAlignment(cx, cy) {
    for (let dy = -2; dy <= 2; dy++) {
      for (let dx = -2; dx <= 2; dx++) {
        this.set(cx + dx, cy + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
      }
    }
  }

  drawFormat(bits) {
    const bit = (i) => ((bits >>> i) & 1) === 1;
    const size = this.size;
    for (let i = 0; i <= 5; i++) this.set(8, i, bit(i));
    this.set(8, 7, bit(6));
    this.set(8, 8, bit(7));
    this.set(7, 8, bit(8));
    for (let i = 9; i < 15; i++) this.set(14 - i, 8, bit(i));
    for (let i = 0; i < 8; i++) this.set(size - 1 - i, 8, bit(i));
    for (let i = 8; i < 15; i++) this.set(8, size - 15 + i, bit(i));
    this.set(8, size - 8, true); // the dark module
  }

  drawVersion() {
    if (this.version < 7) return;
    let rem = this.version;
    for (let i = 0; i < 12; i++) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
    const bits = (this.version << 12) | rem;
    for (let i = 0; i < 18; i++) {
      const dark = ((bits >>> i) & 1) === 1;
      const a = this.size - 11 + (i % 3);
      const b = Math.floor(i / 3);
      this.set(a, b, dark);
      this.set(b, a, dark);
    }
  }

  drawCodewords(codewords) {
    let i = 0;
    const total = codewords.length * 8;
    for (let right = this.size - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5; // skip the vertical timing column
      for (let vert = 0; vert < this.size; vert++) {
        for (let j = 0; j < 2; j++) {
          const x = right - j;
          const upward = ((right + 1) & 2) === 0;
          const y = upward ? this.size - 1 - vert : vert;
          if (!this.reserved[y][x] && i < total) {
            this.dark[y][x] = ((codewords[i >>> 3] >>> (7 - (i & 7))) & 1) === 1;
            i++;
          }
        }
      }
    }
  }

  applyMask(mask) {
    const test = [
      (x, y) => (x + y) % 2 === 0,
      (x, y) => y % 2 === 0,
      (x) => x % 3 === 0,
      (x, y) => (x + y) % 3 === 0,
      (x, y) => (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0,
      (x, y) => ((x * y) % 2) + ((x * y) % 3) === 0,
      (x, y) => (((x * y) % 2) + ((x * y) % 3)) % 2 === 0,
      (x, y) => (((x + y) % 2) + ((x * y) % 3)) % 2 === 0,
    ][mask];
    for (let y = 0; y < this.size; y++) {
      for (let x = 0; x < this.size; x++) {
        if (!this.reserved[y][x] && test(x, y)) this.dark[y][x] = !this.dark[y][x];
      }
    }
  }

  formatBits(ecl, mask) {
    const data = (FORMAT_ECL_BITS[ecl] << 3) | mask;
    let rem = data;
    for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
    return ((data << 10) | rem) ^ 0x5412;
  }

  penalty() {
    const size = this.size;
    const dark = this.dark;
    let score = 0;
    const lines = [];
    for (let y = 0; y < size; y++) lines.push(dark[y]);
    for (let x = 0; x < size; x++) lines.push(dark.map((row) => row[x]));
    // rule 1: runs of five or more same-coloured modules in a row or column
    for (const line of lines) {
      let run = 1;
      for (let i = 1; i <= size; i++) {
        if (i < size && line[i] === line[i - 1]) run++;
        else {
          if (run >= 5) score += 3 + (run - 5);
          run = 1;
        }
      }
    }
    // rule 2: 2×2 blocks of one colour
    for (let y = 0; y < size - 1; y++) {
      for (let x = 0; x < size - 1; x++) {
        const c = dark[y][x];
        if (c === dark[y][x + 1] && c === dark[y + 1][x] && c === dark[y + 1][x + 1]) score += 3;
      }
    }
    // rule 3: finder-like 1:1:3:1:1 patterns with four light modules on one side
    const patternA = [1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0];
    const patternB = [0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1];
    for (const line of lines) {
      for (let i = 0; i + 11 <= size; i++) {
        let a = true;
        let b = true;
        for (let k = 0; k < 11 && (a || b); k++) {
          const bit = line[i + k] ? 1 : 0;
          if (bit !== patternA[k]) a = false;
          if (bit !== patternB[k]) b = false;
        }
        if (a) score += 40;
        if (b) score += 40;
      }
    }
    // rule 4: balance of dark and light
    let darkCount = 0;
    for (const row of dark) for (const c of row) if (c) darkCount++;
    const percent = (darkCount * 100) / (size * size);
    score += Math.floor(Math.abs(percent - 50) / 5) * 10;
    return score;
  }
}

function smallestVersion(length, ecl) {
  for (let version = 1; version <= MAX_VERSION; version++) {
    const countBits = version <= 9 ? 8 : 16;
    if (4 + countBits + length * 8 <= dataCodewords(version, ecl) * 8) return version;
  }
  return null;
}

// Encode `text` (UTF-8, byte mode). Returns {version, ecl, mask, size, modules} where
// modules[y][x] is true for a dark module; throws when the text does not fit version 10.
export function encodeQR(text, { ecl = "M", version = null, mask = null } = {}) {
  if (!(ecl in FORMAT_ECL_BITS)) throw new Error(`unknown error correction level ${ecl}`);
  const bytes = utf8(text);
  const chosen = version || smallestVersion(bytes.length, ecl);
  if (!chosen || chosen > MAX_VERSION || (version && smallestVersion(bytes.length, ecl) > version)) {
    throw new Error("text too long for a QR code of version 10");
  }
  const codewords = withErrorCorrection(encodeData(bytes, chosen, ecl), chosen, ecl);
  const build = (m) => {
    const matrix = new Matrix(chosen);
    matrix.drawFunctionPatterns();
    matrix.drawCodewords(codewords);
    matrix.applyMask(m);
    matrix.drawFormat(matrix.formatBits(ecl, m));
    return matrix;
  };
  let best = null;
  let bestMask = 0;
  const masks = mask === null ? [0, 1, 2, 3, 4, 5, 6, 7] : [mask];
  for (const m of masks) {
    const matrix = build(m);
    const score = masks.length > 1 ? matrix.penalty() : 0;
    if (best === null || score < best.score) {
      best = { matrix, score };
      bestMask = m;
    }
  }
  const { matrix } = best;
  return { version: chosen, ecl, mask: bestMask, size: matrix.size, modules: matrix.dark };
}

// Draw a QR code on a canvas, with the four-module quiet zone scanners need.
export function drawQR(canvas, text, { scale = 6, ecl = "M", dark = "#111", light = "#fff" } = {}) {
  const code = encodeQR(text, { ecl });
  const quiet = 4;
  const pixels = (code.size + quiet * 2) * scale;
  canvas.width = pixels;
  canvas.height = pixels;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = light;
  ctx.fillRect(0, 0, pixels, pixels);
  ctx.fillStyle = dark;
  code.modules.forEach((row, y) => {
    row.forEach((isDark, x) => {
      if (isDark) ctx.fillRect((x + quiet) * scale, (y + quiet) * scale, scale, scale);
    });
  });
  return code;
}
