using System.Runtime.InteropServices;
using Kvq.Cuda.Native;

namespace Kvq.Cuda;

/// <summary>Grid and block shape of a launch.</summary>
public readonly record struct LaunchShape(uint GridX, uint GridY, uint GridZ, uint BlockX, uint SharedBytes = 0)
{
    public static LaunchShape Grid1(long blocks, int threads, int shared = 0) => new((uint)blocks, 1, 1, (uint)threads, (uint)shared);
}

/// <summary>A kernel of a loaded module. Arguments are passed as <see cref="KernelArgs"/>, which keeps each value
/// in place for the driver's array of pointers (cuLaunchKernel reads them during the call).</summary>
public sealed class CudaKernel
{
    private readonly CudaModule _module;   // keeps the module alive while its kernels are reachable
    internal IntPtr Handle { get; }
    public string Name { get; }

    internal CudaKernel(CudaModule module, IntPtr f, string name)
    {
        _module = module;
        Handle = f;
        Name = name;
    }

    public int Registers => Attr(Driver.FuncAttrNumRegs);
    public int LocalBytes => Attr(Driver.FuncAttrLocalBytes);
    public int StaticSharedBytes => Attr(Driver.FuncAttrSharedBytes);

    private int Attr(int a)
    {
        Driver.Check(Driver.cuFuncGetAttribute(out int v, a, Handle), $"cuFuncGetAttribute({Name})");
        return v;
    }

    /// <summary>Allows more than 48 KB of dynamic shared memory (Hopper: up to the device's opt-in limit).</summary>
    public void SetMaxDynamicShared(int bytes) =>
        Driver.Check(Driver.cuFuncSetAttribute(Handle, Driver.FuncAttrMaxDynamicShared, bytes), $"cuFuncSetAttribute({Name}, max dynamic shared {bytes})");

    public unsafe void Launch(LaunchShape s, KernelArgs args, CudaStream? stream = null)
    {
        GC.KeepAlive(_module);
        void** ptrs = args.Pointers;
        Driver.Check(Driver.cuLaunchKernel(Handle, s.GridX, s.GridY, s.GridZ, s.BlockX, 1, 1, s.SharedBytes,
            stream?.Handle ?? IntPtr.Zero, ptrs, null), $"cuLaunchKernel({Name}, grid {s.GridX}x{s.GridY}x{s.GridZ}, block {s.BlockX}, shared {s.SharedBytes})");
    }
}

/// <summary>Kernel arguments in native memory: each value in its own 8-byte-aligned slot and an array of pointers
/// to the slots, as cuLaunchKernel wants them. Add them in the kernel's parameter order.</summary>
public sealed unsafe class KernelArgs : IDisposable
{
    private const int MaxArgs = 32, SlotBytes = 256;   // a slot holds a struct argument of up to 256 bytes
    private byte* _slots;
    private void** _ptrs;
    private int _count;

    public KernelArgs()
    {
        _slots = (byte*)NativeMemory.AlignedAlloc(MaxArgs * SlotBytes, 16);
        _ptrs = (void**)NativeMemory.Alloc(MaxArgs, (nuint)sizeof(void*));
    }

    internal void** Pointers => _ptrs != null ? _ptrs : throw new ObjectDisposedException(nameof(KernelArgs));

    public KernelArgs Add<T>(T value) where T : unmanaged
    {
        if (sizeof(T) > SlotBytes) throw new ArgumentException($"kernel argument of {sizeof(T)} bytes (at most {SlotBytes})");
        if (_count == MaxArgs) throw new InvalidOperationException($"more than {MaxArgs} kernel arguments");
        byte* slot = _slots + _count * SlotBytes;
        *(T*)slot = value;
        _ptrs[_count++] = slot;
        return this;
    }

    public KernelArgs Add(DeviceBuffer b) => Add(b.Pointer);

    public KernelArgs Clear()
    {
        _count = 0;
        return this;
    }

    public void Dispose()
    {
        if (_slots == null) return;
        NativeMemory.AlignedFree(_slots);
        NativeMemory.Free(_ptrs);
        _slots = null;
        _ptrs = null;
    }
}
