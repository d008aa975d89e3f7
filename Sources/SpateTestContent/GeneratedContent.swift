import Glibc
import Spate

/// Deterministic pseudo-random content of any size, computable at any offset without state.
///
/// Why this construction: tests and benchmarks need gigabytes that are cheap to produce on both
/// sides (the server streams them, the tests compare against them) and that catch any misplaced
/// byte. The content is a 64 KiB base block of SplitMix64 output for `seed`, XOR-ed word by word
/// with a per-block key `mix(seed, block)`. `mix` is a bijection of the block number, so no two
/// blocks are equal, and within a block every word differs by the random base: a chunk written
/// at the wrong offset, a duplicated or a dropped chunk always changes the file.
/// Generation costs one XOR per 8 bytes (several GB/s).
public struct GeneratedContent: Sendable, Hashable {
    public let seed: UInt64
    public let size: Int64
    static let blockWords = 8192  // 64 KiB
    private let base: [UInt64]

    public init(seed: UInt64, size: Int64) {
        precondition(size >= 0)
        self.seed = seed
        self.size = size
        var generator = SplitMix64(seed: seed)
        base = (0..<Self.blockWords).map { _ in generator.next() }
    }

    public static func == (a: GeneratedContent, b: GeneratedContent) -> Bool { a.seed == b.seed && a.size == b.size }
    public func hash(into hasher: inout Hasher) { hasher.combine(seed); hasher.combine(size) }

    /// A strong entity tag that changes with the seed and the size.
    public var etag: String { "\"g\(String(seed, radix: 16))-\(String(size, radix: 16))\"" }

    @inline(__always)
    func word(at index: Int64) -> UInt64 {
        let block = UInt64(index) / UInt64(Self.blockWords)
        return base[Int(UInt64(index) % UInt64(Self.blockWords))] ^ SplitMix64.mix(block &+ seed)
    }

    /// Writes the content bytes `offset ..< offset + buffer.count` into `buffer`.
    public func fill(_ buffer: UnsafeMutableRawBufferPointer, from offset: Int64) {
        precondition(offset >= 0 && offset + Int64(buffer.count) <= size, "fill outside the content")
        var position = offset
        var out = 0
        let end = offset + Int64(buffer.count)
        // Leading bytes up to a word boundary.
        while position < end && position % 8 != 0 {
            buffer[out] = byte(at: position)
            position += 1; out += 1
        }
        // Whole words, block by block.
        base.withUnsafeBufferPointer { baseWords in
            while end - position >= 8 {
                let wordIndex = position / 8
                let block = UInt64(wordIndex) / UInt64(Self.blockWords)
                let key = SplitMix64.mix(block &+ seed)
                let inBlock = Int(UInt64(wordIndex) % UInt64(Self.blockWords))
                let words = min(Self.blockWords - inBlock, Int((end - position) / 8))
                for i in 0..<words {
                    (buffer.baseAddress! + out + i * 8).storeBytes(of: (baseWords[inBlock + i] ^ key).littleEndian, as: UInt64.self)
                }
                position += Int64(words * 8)
                out += words * 8
            }
        }
        while position < end {
            buffer[out] = byte(at: position)
            position += 1; out += 1
        }
    }

    /// One byte of the content.
    public func byte(at offset: Int64) -> UInt8 {
        let w = word(at: offset / 8)
        return UInt8(truncatingIfNeeded: w >> (UInt64(offset % 8) * 8))
    }

    /// The bytes of `start ..< end` as an array (for small ranges in tests).
    public func bytes(_ start: Int64, _ end: Int64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(end - start))
        out.withUnsafeMutableBytes { fill($0, from: start) }
        return out
    }

    /// Compares `data` with the content at `offset`; returns the first differing offset.
    public func firstMismatch(_ data: UnsafeRawBufferPointer, at offset: Int64) -> Int64? {
        guard offset + Int64(data.count) <= size else { return max(offset, size) }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: data.count, alignment: 8)
        defer { scratch.deallocate() }
        fill(scratch, from: offset)
        if memcmpEqual(scratch, data) { return nil }
        for i in 0..<data.count where scratch[i] != data[i] { return offset + Int64(i) }
        return nil
    }

    private func memcmpEqual(_ a: UnsafeMutableRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
    }
}

extension GeneratedContent {
    /// Compares the file at `path` with this content, byte for byte.
    /// Returns a description of the first difference, or nil when identical.
    public func differences(inFileAt path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return "cannot open \(path): \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        if Int64(info.st_size) != size { return "size \(info.st_size), expected \(size)" }
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 8)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < size {
            let n = Int(min(Int64(chunk), size - offset))
            let got = pread(fd, buffer.baseAddress!, n, off_t(offset))
            if got != n { return "short read at \(offset)" }
            if let bad = firstMismatch(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), at: offset) {
                return "first wrong byte at offset \(bad)"
            }
            offset += Int64(n)
        }
        return nil
    }
}

extension GeneratedContent {
    /// The digest of the whole content, generated 1 MiB at a time (about 1 s per GiB here).
    public func digest(_ algorithm: DigestAlgorithm) -> [UInt8] {
        let digest = Digest(algorithm)
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 8)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < size {
            let n = Int(min(Int64(chunk), size - offset))
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
            fill(slice, from: offset)
            digest.update(UnsafeRawBufferPointer(slice))
            offset += Int64(n)
        }
        return digest.finalize()
    }
}
