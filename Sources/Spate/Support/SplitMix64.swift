/// SplitMix64: a small, fast, seedable generator. Spate uses it for retry jitter; the test
/// server, tests and benchmarks for reproducible draws (a printed seed replays a run).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    /// A uniform draw in [0, 1).
    public mutating func nextUnitInterval() -> Double { Double(next() >> 11) / Double(1 << 53) }

    /// SplitMix64's finaliser: a bijection on UInt64 (distinct inputs, distinct outputs).
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
