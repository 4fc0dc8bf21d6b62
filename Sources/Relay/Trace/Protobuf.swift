/// The protocol-buffers wire format, as much of it as an OTLP export needs: varints, length-delimited fields
/// (strings, bytes, embedded messages), fixed32 and fixed64. Fields are written in the order given; a field at its
/// default value (0, empty) is written only when the caller writes it (proto3 readers accept both).
public struct ProtobufWriter: Sendable {
    public enum WireType: UInt8, Sendable {
        case varint = 0, fixed64 = 1, lengthDelimited = 2, fixed32 = 5
    }

    public private(set) var bytes: [UInt8] = []

    public init() {}

    /// Base 128, least significant group first, the high bit of each byte saying another follows.
    public mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    public mutating func tag(_ field: Int, _ type: WireType) {
        varint(UInt64(field) << 3 | UInt64(type.rawValue))
    }

    /// `uint32`, `uint64`, an enum, or `bool` (0 / 1).
    public mutating func uint(_ field: Int, _ value: UInt64) {
        tag(field, .varint)
        varint(value)
    }

    /// `int64`: two's complement as a varint (a negative value takes ten bytes).
    public mutating func int(_ field: Int, _ value: Int64) {
        uint(field, UInt64(bitPattern: value))
    }

    public mutating func bool(_ field: Int, _ value: Bool) { uint(field, value ? 1 : 0) }

    /// `fixed64` (and `double` via its bit pattern), little-endian.
    public mutating func fixed64(_ field: Int, _ value: UInt64) {
        tag(field, .fixed64)
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(8 * i))) }
    }

    public mutating func double(_ field: Int, _ value: Double) { fixed64(field, value.bitPattern) }

    /// `fixed32`, little-endian.
    public mutating func fixed32(_ field: Int, _ value: UInt32) {
        tag(field, .fixed32)
        for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(8 * i))) }
    }

    public mutating func bytes(_ field: Int, _ value: [UInt8]) {
        tag(field, .lengthDelimited)
        varint(UInt64(value.count))
        bytes += value
    }

    public mutating func string(_ field: Int, _ value: String) {
        tag(field, .lengthDelimited)
        varint(UInt64(value.utf8.count))
        bytes += value.utf8
    }

    /// An embedded message: `body` writes its fields, then they are framed with their length.
    public mutating func message(_ field: Int, _ body: (inout ProtobufWriter) -> Void) {
        var inner = ProtobufWriter()
        body(&inner)
        bytes(field, inner.bytes)
    }
}
