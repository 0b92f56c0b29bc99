using System.Runtime.InteropServices;
using System.Text;
using Kvq.Cuda.Native;

namespace Kvq.Cuda;

/// <summary>Owns a loaded module (a cubin) and hands out its kernels; the kernels live as long as the module.</summary>
public sealed class CudaModule : SafeHandle
{
    private readonly IntPtr _ctx;
    public string Name { get; }

    private CudaModule(IntPtr ctx, IntPtr module, string name) : base(IntPtr.Zero, true)
    {
        _ctx = ctx;
        Name = name;
        SetHandle(module);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    public static unsafe CudaModule Load(CudaContext ctx, byte[] image, string name)
    {
        ctx.MakeCurrent();
        fixed (byte* p = image)
        {
            Driver.Check(Driver.cuModuleLoadData(out var m, p), $"cuModuleLoadData({name})");
            return new CudaModule(ctx.Live(), m, name);
        }
    }

    public unsafe CudaKernel Kernel(string function)
    {
        var bytes = Encoding.UTF8.GetBytes(function + "\0");
        fixed (byte* p = bytes)
        {
            Driver.Check(Driver.cuModuleGetFunction(out var f, handle, p), $"cuModuleGetFunction({Name}:{function})");
            return new CudaKernel(this, f, function);
        }
    }

    protected override bool ReleaseHandle()
    {
        Driver.cuCtxSetCurrent(_ctx);
        return Driver.cuModuleUnload(handle) == 0;
    }
}
