import Glibc

/// `--resolve HOST:PORT:ADDRESS[,ADDRESS...]` (as curl's): requests to HOST on PORT connect to
/// ADDRESS instead of what DNS says, while the URL, the `Host` header, TLS's server name and
/// certificate check, and the per-host budgets keep HOST. For a CDN node or a new server
/// before its DNS changes, a cluster's nodes pinned to a nearby mirror, a test against a name.
///
/// Checked here, before any request: libcurl skips an entry it cannot parse with only a
/// line in its verbose trace, and the download would then quietly use DNS.
public struct ResolveOverride: Sendable, Hashable, CustomStringConvertible {
    public let host: String
    public let port: Int
    /// IPv4 dotted quads, or IPv6 addresses (given in brackets, stored without).
    public let addresses: [String]
    /// The entry as libcurl's `CURLOPT_RESOLVE` takes it (made once: every request carries it).
    let curlEntry: String

    /// Parses `HOST:PORT:ADDRESS[,ADDRESS...]`; IPv6 addresses in brackets (`[::1]`).
    public init(parsing text: String) throws(SpateError) {
        func bad(_ why: String) -> SpateError {
            .usage("invalid --resolve \"\(text)\": \(why) (use HOST:PORT:ADDRESS[,ADDRESS...], IPv6 in brackets)")
        }
        guard let firstColon = text.firstIndex(of: ":") else { throw bad("no port") }
        let host = String(text[..<firstColon])
        let rest = text[text.index(after: firstColon)...]
        guard let secondColon = rest.firstIndex(of: ":") else { throw bad("no address") }
        let portText = rest[..<secondColon]
        let addressText = rest[rest.index(after: secondColon)...]
        // (A leading '-' is libcurl's syntax for removing an entry, and no host name has one.)
        guard !host.isEmpty, host.utf8.count <= 253, !host.hasPrefix("-"),
              host.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_")
                  || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0 | 0x20) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
        else { throw bad("the host must be a name (letters, digits, '-', '.', '_'; not starting with '-')") }
        guard portText.utf8.count <= 5, portText.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
              let port = Int(portText), (1...65535).contains(port) else { throw bad("the port must be 1-65535") }
        var addresses: [String] = []
        for part in addressText.split(separator: ",", omittingEmptySubsequences: false) {
            let bracketed = part.hasPrefix("[") && part.hasSuffix("]") && part.count > 2
            let address = bracketed ? String(part.dropFirst().dropLast()) : String(part)
            guard Self.isAddress(address, family: bracketed ? AF_INET6 : AF_INET) else {
                throw bad(part.isEmpty ? "an address is empty" : "\(part) is not an IPv4 address or a bracketed IPv6 address")
            }
            addresses.append(address)
        }
        guard !addresses.isEmpty, addresses.count <= 16 else { throw bad("give 1 to 16 addresses") }
        self.host = host
        self.port = port
        self.addresses = addresses
        curlEntry = "\(host):\(port):" + addresses.map { $0.contains(":") ? "[\($0)]" : $0 }.joined(separator: ",")
    }

    private static func isAddress(_ text: String, family: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        return inet_pton(family, text, &buffer) == 1
    }

    public var description: String { curlEntry }
}
