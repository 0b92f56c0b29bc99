using System.Text;
using Kvq.IO;
using Kvq.Tensors;

namespace Kvq.Formats.Gguf;

/// <summary>
/// Builds a GGUF v3 file: metadata in insertion order, then tensors aligned to 32 bytes. Used to write small test
/// models and converted files; the output is written atomically.
/// </summary>
public sealed class GgufWriter
{
    private const int Alignment = 32;
    private readonly List<(string Key, GgufValueType Type, object Value)> _meta = [];
    private readonly List<(string Name, long[] Dims, GgmlType Type, byte[] Data)> _tensors = [];

    public GgufWriter Add(string key, string v) => AddRaw(key, GgufValueType.String, v);
    public GgufWriter Add(string key, uint v) => AddRaw(key, GgufValueType.UInt32, v);
    public GgufWriter Add(string key, int v) => AddRaw(key, GgufValueType.Int32, v);
    public GgufWriter Add(string key, float v) => AddRaw(key, GgufValueType.Float32, v);
    public GgufWriter Add(string key, bool v) => AddRaw(key, GgufValueType.Bool, v);
    public GgufWriter Add(string key, ulong v) => AddRaw(key, GgufValueType.UInt64, v);
    public GgufWriter Add(string key, long v) => AddRaw(key, GgufValueType.Int64, v);
    public GgufWriter Add(string key, double v) => AddRaw(key, GgufValueType.Float64, v);
    public GgufWriter Add(string key, byte v) => AddRaw(key, GgufValueType.UInt8, v);
    public GgufWriter Add(string key, sbyte v) => AddRaw(key, GgufValueType.Int8, v);
    public GgufWriter Add(string key, ushort v) => AddRaw(key, GgufValueType.UInt16, v);
    public GgufWriter Add(string key, short v) => AddRaw(key, GgufValueType.Int16, v);
    public GgufWriter Add(string key, string[] v) => AddRaw(key, GgufValueType.Array, v);
    public GgufWriter Add(string key, float[] v) => AddRaw(key, GgufValueType.Array, v);
    public GgufWriter Add(string key, int[] v) => AddRaw(key, GgufValueType.Array, v);
    public GgufWriter Add(string key, Array v) => AddRaw(key, GgufValueType.Array, v);

    /// <summary>Adds a metadata value with an explicit GGUF type (arrays: any CLR array of a GGUF element type).</summary>
    public GgufWriter AddRaw(string key, GgufValueType type, object value)
    {
        _meta.Add((key, type, value));
        return this;
    }

    /// <summary>Adds a tensor; <paramref name="dims"/> in ggml order (dims[0] contiguous), data already encoded.</summary>
    public GgufWriter AddTensor(string name, long[] dims, GgmlType type, byte[] data)
    {
        long n = 1;
        foreach (var d in dims) n *= d;
        long expect = GgmlTypeInfo.RowBytes(type, dims[0]) * (n / dims[0]);
        if (data.Length != expect)
            throw new ArgumentException($"tensor '{name}': {type} {string.Join('x', dims)} needs {expect} bytes, got {data.Length}");
        _tensors.Add((name, dims, type, data));
        return this;
    }

    public GgufWriter AddTensor(string name, long[] dims, float[] values) =>
        AddTensor(name, dims, GgmlType.F32, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public void Save(string path) => AtomicFile.Write(path, WriteTo);

    public void WriteTo(Stream stream)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_meta.Count);
        foreach (var (key, type, value) in _meta)
        {
            WriteString(w, key);
            w.Write((uint)type);
            WriteValue(w, type, value);
        }
        long offset = 0;
        var offsets = new long[_tensors.Count];
        for (int i = 0; i < _tensors.Count; i++)
        {
            var (name, dims, type, data) = _tensors[i];
            WriteString(w, name);
            w.Write((uint)dims.Length);
            foreach (var d in dims) w.Write((ulong)d);
            w.Write((uint)type);
            offsets[i] = offset;
            w.Write((ulong)offset);
            offset = Align(offset + data.Length);
        }
        w.Flush();
        Pad(w, Align(stream.Position) - stream.Position);
        long dataStart = stream.Position;
        for (int i = 0; i < _tensors.Count; i++)
        {
            Pad(w, dataStart + offsets[i] - stream.Position);
            w.Write(_tensors[i].Data);
        }
    }

    private static long Align(long x) => (x + Alignment - 1) / Alignment * Alignment;

    private static void Pad(BinaryWriter w, long n)
    {
        for (long i = 0; i < n; i++) w.Write((byte)0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object v)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write(Convert.ToByte(v)); break;
            case GgufValueType.Int8: w.Write(Convert.ToSByte(v)); break;
            case GgufValueType.UInt16: w.Write(Convert.ToUInt16(v)); break;
            case GgufValueType.Int16: w.Write(Convert.ToInt16(v)); break;
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(v)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(v)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(v)); break;
            case GgufValueType.Bool: w.Write((byte)((bool)v ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)v); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(v)); break;
            case GgufValueType.Int64: w.Write(Convert.ToInt64(v)); break;
            case GgufValueType.Float64: w.Write(Convert.ToDouble(v)); break;
            case GgufValueType.Array:
            {
                var a = (Array)v;
                var et = ElementType(a);
                w.Write((uint)et);
                w.Write((ulong)a.Length);
                foreach (var item in a) WriteValue(w, et, item!);
                break;
            }
            default: throw new ArgumentException($"unknown GGUF value type {type}");
        }
    }

    // By the exact element type: CLR type tests let sbyte[] pass as byte[], int[] as uint[], short[] as ushort[] and
    // long[] as ulong[], so a pattern switch (byte[] => ..., sbyte[] => ...) wrote int[] as UINT32, sbyte[] as UINT8.
    private static GgufValueType ElementType(Array a) => Type.GetTypeCode(a.GetType().GetElementType()) switch
    {
        TypeCode.Byte => GgufValueType.UInt8,
        TypeCode.SByte => GgufValueType.Int8,
        TypeCode.UInt16 => GgufValueType.UInt16,
        TypeCode.Int16 => GgufValueType.Int16,
        TypeCode.UInt32 => GgufValueType.UInt32,
        TypeCode.Int32 => GgufValueType.Int32,
        TypeCode.Single => GgufValueType.Float32,
        TypeCode.Boolean => GgufValueType.Bool,
        TypeCode.String => GgufValueType.String,
        TypeCode.UInt64 => GgufValueType.UInt64,
        TypeCode.Int64 => GgufValueType.Int64,
        TypeCode.Double => GgufValueType.Float64,
        _ when a is object[] => GgufValueType.Array, // arrays of arrays (object[] or jagged T[][])
        _ => throw new ArgumentException($"no GGUF array type for {a.GetType().Name}"),
    };
}
