/// One file of a batch: where it comes from, where it goes, and how to check it.
public struct ManifestEntry: Sendable, Hashable {
    /// The manifest line the entry starts on (1-based; for messages).
    public var line: Int
    public var url: String
    /// The output path relative to the batch's base directory, normalised: no leading `/`, no
    /// `.` or `..` components, no empty components (see `BatchPath.normalize`).
    public var destination: String
    /// The expected digest (`checksum=` in aria2's format).
    public var checksum: Checksum?
    /// Extra request headers for this file only (`header=`), sent only to its URL's origin.
    public var headers: [HTTPHeader]
    /// Other sources of the same file: the URLs after the first on its line (aria2's
    /// TAB-separated mirrors).
    public var mirrors: [RemoteURL] = []
    /// The URL as the parser already parsed it (saves parsing it again per file); not part of
    /// the entry's identity.
    var remote: RemoteURL?

    public init(line: Int, url: String, destination: String, checksum: Checksum? = nil, headers: [HTTPHeader] = []) {
        self.line = line
        self.url = url
        self.destination = destination
        self.checksum = checksum
        self.headers = headers
    }
}

extension ManifestEntry {
    public static func == (a: ManifestEntry, b: ManifestEntry) -> Bool {
        a.line == b.line && a.url == b.url && a.destination == b.destination && a.checksum == b.checksum && a.headers == b.headers
            && a.mirrors == b.mirrors
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(line)
        hasher.combine(url)
        hasher.combine(destination)
    }
}
