-- -*- lua -*-
-- Module file created by spack (@SPACK_URL@) on 2026-11-25 06:17:39.162697
--
-- hdf5@1.10.8+cxx+fortran+hl~java+mpi+shared+szip~threadsafe+tools api:=v18 build_system=cmake build_type=Release generator=make platform=linux os=debian12 target=x86_64/bsz4j7z
--

whatis([[Name : hdf5]])
whatis([[Version : 1.10.8]])
whatis([[Target : x86_64]])
whatis([[Short description : HDF5 is a data model, library, and file format for storing and managing data. It supports an unlimited variety of datatypes, and is designed for flexible and efficient I/O and for high volume and complex data. ]])
whatis([[Configure options : unknown, software installed outside of Spack]])

help([[Name   : hdf5]])
help([[Version: 1.10.8]])
help([[Target : x86_64]])
help()
help([[HDF5 is a data model, library, and file format for storing and managing
data. It supports an unlimited variety of datatypes, and is designed for
flexible and efficient I/O and for high volume and complex data.]])


depends_on("openmpi/4.1.4-d2lqwco")

prepend_path("MANPATH", "/usr/share/man", ":")
prepend_path("ACLOCAL_PATH", "/usr/share/aclocal", ":")
prepend_path("PKG_CONFIG_PATH", "/usr/lib/pkgconfig", ":")
prepend_path("PKG_CONFIG_PATH", "/usr/share/pkgconfig", ":")
append_path("LD_LIBRARY_PATH", "/usr/lib", ":")
append_path("MANPATH", "", ":")

