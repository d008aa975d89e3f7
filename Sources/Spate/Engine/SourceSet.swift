import Synchronization

/// The sources of one download's bytes: the URL the user gave (index 0) and the mirrors that
/// describe the same file (`--mirror`, TAB-separated URLs on a manifest line).
///
/// Ranges flow to the sources by measured throughput without a plan: worker `i` asks the
/// active sources in turn (`i` modulo their count), and a worker asks for its next range as
/// soon as its last one ends, so a source twice as fast serves about twice the ranges; the
/// request sizer gives a fast worker longer requests, and at the end idle workers steal from
/// (or hedge) the slow sources' requests. Each source's host has its own connection budget.
///
/// A source that fails (its retries spent, replies that cannot be used, or a changed file on a
/// mirror) is dropped with a notice, and its bytes go to the others; the last source's failure
/// is the download's.
final class SourceSet: Sendable {
    struct Source: Sendable {
        let resolver: RemoteResolver
        /// Builds this source's requests: the user's headers go only to the user's URL's origin.
        let requests: RequestBuilder
    }

    let sources: [Source]
    private let active: Mutex<[Bool]>

    init(_ sources: [Source]) {
        precondition(!sources.isEmpty)
        self.sources = sources
        active = Mutex(Array(repeating: true, count: sources.count))
    }

    /// The source of worker `worker`'s next request, and its index.
    func source(for worker: Int) -> (index: Int, source: Source) {
        let indices = active.withLock { flags in flags.indices.filter { flags[$0] } }
        let index = indices.isEmpty ? 0 : indices[worker % indices.count]
        return (index, sources[index])
    }

    /// How many sources are still in use.
    var activeCount: Int { active.withLock { $0.filter { $0 }.count } }

    enum Drop: Equatable {
        /// Dropped now (say so once).
        case dropped
        /// Dropped before (a request that was already on its way to it ended).
        case alreadyDropped
        /// Kept: the error is the download's.
        case kept
    }

    /// Stops using source `index` after `error`. Kept when the error is not the source's fault
    /// (local I/O, a closed output, a checksum), when the URL the user gave saw its file change
    /// (the download starts over or stops, as without mirrors), or when it is the last source
    /// in use: then the error is the download's.
    func drop(_ index: Int, after error: SpateError) -> Drop {
        switch error.kind {
        case .network, .http, .invalidResponse: break
        case .remoteChanged where index != 0: break
        default: return .kept
        }
        return active.withLock { flags in
            guard flags[index] else { return .alreadyDropped }
            guard flags.filter({ $0 }).count > 1 else { return .kept }
            flags[index] = false
            return .dropped
        }
    }

    /// Why `mirror` cannot serve ranges of the file `primary` describes, or nil when it can.
    ///
    /// Same size, byte ranges, and the same version: the same strong ETag (else the same
    /// Last-Modified when neither has one). Mirrors on other servers often carry other
    /// validators for the same bytes; they are used only when `checksum` (the user's, or the
    /// one the URL's server publishes) will check every byte at the end, and never when the
    /// mirror publishes a digest of the same kind that disagrees.
    static func mismatch(primary: RemoteFile, mirror: RemoteFile, checksum: Checksum?) -> String? {
        guard mirror.acceptsRanges else { return "it does not serve byte ranges" }
        guard mirror.size == primary.size else {
            return "it serves \(mirror.size.map { "\($0) bytes" } ?? "an unknown size"), the URL \(primary.size.map { "\($0) bytes" } ?? "an unknown size")"
        }
        if let checksum {
            if let other = mirror.serverDigests.first(where: { $0.checksum.algorithm == checksum.algorithm }),
               other.checksum != checksum {
                return "its \(other.source) says \(other.checksum), not \(checksum)"
            }
            return nil
        }
        for digest in mirror.serverDigests {
            if let mine = primary.serverDigests.first(where: { $0.checksum.algorithm == digest.checksum.algorithm }),
               mine.checksum != digest.checksum {
                return "its \(digest.source) says \(digest.checksum), the URL's \(mine.checksum)"
            }
        }
        if let etag = primary.strongETag, mirror.strongETag == etag { return nil }
        if primary.strongETag == nil, mirror.strongETag == nil, let date = primary.lastModified, mirror.lastModified == date {
            return nil
        }
        return "nothing shows it serves the same version (ETag \(mirror.strongETag ?? "none"), Last-Modified \(mirror.lastModified ?? "none"); the URL's \(primary.strongETag ?? primary.lastModified ?? "none")): give --checksum to use mirrors whose validators differ"
    }
}
