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

    public init(line: Int, url: String, destination: String, checksum: Checksum? = nil, headers: [HTTPHeader] = []) {
        self.line = line
        self.url = url
        self.destination = destination
        self.checksum = checksum
        self.headers = headers
    }
}
